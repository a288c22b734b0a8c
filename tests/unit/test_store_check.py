"""The data directory check: an intact store passes; any damage to its head or length is refused
with a message, or leaves a file LMDB opens and reads without error. Never a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sidecar.store.check import DamagedStore, check_data_dir
from sidecar.store.environment import open_environment


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("intact") / "data"
    env, dbs = open_environment(path, durability="none", map_size=1 << 26)
    with env.begin(write=True) as txn:
        for n in range(2000):
            txn.put(b"key-%d" % n, b"v" * 100, db=dbs["state"])
    env.close()
    return path


def test_an_intact_store_and_a_new_one_pass(intact: Path, tmp_path: Path) -> None:
    check_data_dir(intact)
    check_data_dir(tmp_path / "new")
    (tmp_path / "empty-dir").mkdir()
    check_data_dir(tmp_path / "empty-dir")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 3 * 4096), junk=st.binary(min_size=1, max_size=64), cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_damage_is_refused_or_harmless(intact: Path, tmp_path: Path, offset: int, junk: bytes, cut: int | None) -> None:
    data = tmp_path / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(intact, data)
    with (data / "data.mdb").open("r+b") as file:
        file.seek(offset)
        file.write(junk)
    if cut is not None:
        os.truncate(data / "data.mdb", min(cut, (data / "data.mdb").stat().st_size))
    try:
        check_data_dir(data)
    except DamagedStore as exc:
        assert str(data / "data.mdb") in str(exc)
        return
    # Passed: LMDB must open it and its meta must agree with the file (data pages are not checked).
    try:
        env = lmdb.open(str(data), readonly=True, lock=False, max_dbs=20)
    except lmdb.Error:
        return  # LMDB refuses it itself, with an error rather than a crash
    env.close()
