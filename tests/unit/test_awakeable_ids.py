"""Awakeable IDs: minted from a per-invocation key, checked by the sidecar without a lookup."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import awakeable_id
from sidecar.ids import IdGenerator
from sidecar.invoker.awakeable_ids import invocation_key, minted, parse_awakeable_id

SECRET = secrets.token_bytes(32)
INV = IdGenerator().invocation_id(5)
OTHER = IdGenerator().invocation_id(5)


def _mint(invocation_id: str, index: int, secret: bytes = SECRET) -> str:
    return awakeable_id(invocation_id, index, invocation_key(secret, invocation_id))


@settings(max_examples=50, deadline=None)
@given(index=st.integers(0, 2**32 - 1))
def test_a_minted_id_verifies_and_names_its_invocation_and_index(index: int) -> None:
    minted_id = _mint(INV, index)
    assert minted(SECRET, minted_id)
    assert parse_awakeable_id(minted_id) == (INV, index)
    tag = minted_id[len(f"awk_{INV}_{index}_"):]
    assert len(tag) == 22 and all(c.isalnum() or c in "-_" for c in tag)  # 128 bits, URL-safe


@settings(max_examples=100, deadline=None)
@given(index=st.integers(0, 2**32 - 1), position=st.integers(0, 200), char=st.characters(min_codepoint=32))
def test_any_change_to_a_minted_id_fails(index: int, position: int, char: str) -> None:
    good = _mint(INV, index)
    position %= len(good)
    changed = good[:position] + char + good[position + 1:]
    if changed != good:
        assert not minted(SECRET, changed)


def test_another_invocation_index_or_directory_does_not_verify() -> None:
    good = _mint(INV, 3)
    tag = good[len(f"awk_{INV}_3_"):]
    assert not minted(SECRET, f"awk_{OTHER}_3_{tag}")  # the tag of one invocation on another
    assert not minted(SECRET, f"awk_{INV}_4_{tag}")
    assert not minted(SECRET, f"awk_{INV}_03_{tag}")  # the same number, written otherwise
    assert not minted(secrets.token_bytes(32), good)  # another data directory's secret
    # One invocation's key mints only its own IDs: it says nothing about another's.
    assert awakeable_id(OTHER, 3, invocation_key(SECRET, INV)) != _mint(OTHER, 3)


@settings(max_examples=50, deadline=None)
@given(index=st.integers(2**32, 10**40), tag=st.text(max_size=30))
def test_huge_indexes_are_refused_without_an_exception(index: int, tag: str) -> None:
    forged = f"awk_{INV}_{index}_{tag}"
    assert not minted(SECRET, forged)
    with pytest.raises(ValueError):
        parse_awakeable_id(forged)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_is_refused_without_an_exception(text: str) -> None:
    assert not minted(SECRET, text)
    assert not minted(SECRET, f"awk_{INV}_{text}")
