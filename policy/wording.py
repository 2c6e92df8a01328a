"""How the engine's checks are worded: `make_check` and the Chinese names of the
contact relations the checks print."""

from __future__ import annotations

from .model import RELATIONS, Check

__all__ = ["ALL_RELATIONS", "REL_ZH", "make_check"]

ALL_RELATIONS = RELATIONS  # in the order the checks name them
REL_ZH = {"self": "本人", "guarantor": "担保人", "family": "家属", "work": "单位/同事", "third_party": "第三方"}


def make_check(rule_id: str, passed: bool, en: str, zh: str) -> Check:
    return Check(rule_id, passed, en, zh)
