"""`[recordings] store` and `[recordings.s3]`: parsed once, wrong values refused with
their key path, credentials only by environment variable or file."""

from __future__ import annotations

import pytest

from adapters.storage.compose import blob_store
from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.s3 import S3BlobStore, settings_from_config
from recordings.config import parse_recordings_config
from recordings.errors import ConfigError


def test_no_store_means_the_filesystem_under_the_data_dir(tmp_path) -> None:
    cfg = parse_recordings_config({}, tmp_path)
    assert cfg.store == "" and isinstance(blob_store(cfg), FilesystemBlobStore)


def test_an_s3_store_takes_its_credentials_from_the_named_environment_variables(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REC_AK", "AKIAEXAMPLE")
    monkeypatch.setenv("REC_SK", "not-a-real-secret")
    cfg = parse_recordings_config(
        {
            "store": "s3://dialgate-rec/prod",
            "s3": {"endpoint": "http://127.0.0.1:9", "access_key_env": "REC_AK", "secret_key_env": "REC_SK",
                   "object_lock": "governance", "part_size_mb": 16, "concurrency": 2},
        },
        tmp_path,
    )
    store = blob_store(cfg)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.object_lock, store.part_size, store.concurrency) == (
        "dialgate-rec", "prod", "governance", 16 * 1024 * 1024, 2,
    )
    assert "not-a-real-secret" not in repr(settings_from_config(cfg.store, cfg.s3 or {}))


def test_credentials_can_come_from_files(tmp_path) -> None:
    for name, value in (("ak", "AKIAFILE\n"), ("sk", "file-secret\n")):
        (tmp_path / name).write_text(value)
        (tmp_path / name).chmod(0o600)  # a credential others may read is refused
    s = settings_from_config(
        "s3://b-1", {"access_key_file": str(tmp_path / "ak"), "secret_key_file": str(tmp_path / "sk")}, environ={}
    )
    assert (s.access_key, s.secret_key, s.prefix, s.object_lock) == ("AKIAFILE", "file-secret", "", "compliance")


def test_a_missing_credential_names_the_variable_to_set() -> None:
    with pytest.raises(ConfigError, match="DIALGATE_S3_ACCESS_KEY"):
        settings_from_config("s3://b-1", {}, environ={})


def test_a_credential_file_others_may_read_is_refused_without_showing_it(tmp_path) -> None:
    (tmp_path / "ak").write_text("AKIAOPEN\n")
    (tmp_path / "ak").chmod(0o644)
    (tmp_path / "sk").write_text("open-secret\n")
    (tmp_path / "sk").chmod(0o600)
    with pytest.raises(ConfigError, match=r"recordings\.s3\.access_key_file.*chmod 600") as err:
        settings_from_config(
            "s3://b-1", {"access_key_file": str(tmp_path / "ak"), "secret_key_file": str(tmp_path / "sk")}, environ={}
        )
    assert "AKIAOPEN" not in str(err.value)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"store": "/srv/recordings"}, "recordings.store"),
        ({"s3": {"endpont": "x"}}, "recordings.s3.endpont"),
        ({"s3": {"object_lock": "strict"}}, "recordings.s3.object_lock"),
        ({"s3": {"part_size_mb": 4}}, "recordings.s3.part_size_mb"),
        ({"s3": {"concurrency": 0}}, "recordings.s3.concurrency"),
        ({"s3": {"concurrency": "4"}}, "recordings.s3.concurrency"),
        ({"s3": {"secret_key_env": "A", "secret_key_file": "/f"}}, "recordings.s3.secret_key"),
    ],
)
def test_a_wrong_s3_setting_is_refused_with_its_key_path(tmp_path, raw, path) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        parse_recordings_config(raw, tmp_path)
