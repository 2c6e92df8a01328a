"""Storage adapters of the recordings vault: the filesystem blob store and the
key-encryption-key providers (key file, environment)."""
