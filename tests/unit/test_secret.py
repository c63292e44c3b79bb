from __future__ import annotations

import logging
import pickle

import pytest

from crmflow.domain.secret import Secret


def test_secret_never_shows_its_value(caplog):
    s = Secret("hunter2-token")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in f"{s} {s!r} {[s]} { ({'t': s}) }"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("token is %s / %r", s, s)
    assert "hunter2" not in caplog.text
    assert s.reveal() == "hunter2-token"


def test_secret_equality_and_pickle_refusal():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    with pytest.raises(TypeError):
        pickle.dumps(Secret("a"))


def test_secret_in_exception_message_is_masked():
    with pytest.raises(ValueError, match="refresh failed") as info:
        raise ValueError(f"refresh failed for {Secret('rt-123')}")
    assert "rt-123" not in str(info.value)
