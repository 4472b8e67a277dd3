"""Funding keys from settings: whitespace a Secret file leaves is dropped, and a bad value
fails without the value appearing anywhere in the error or its traceback."""

from __future__ import annotations

import traceback

import pytest
from pydantic import SecretStr
from stellar_sdk import Keypair

from ramp_service.adapters.registration import funding_keys
from ramp_service.config import RampSettings


def settings(stellar: str = "", pendulum: str = "") -> RampSettings:
    return RampSettings(
        stellar_funding_secret=SecretStr(stellar), pendulum_funding_seed=SecretStr(pendulum)
    )


def test_keys_load_with_a_trailing_newline() -> None:
    keypair = Keypair.random()
    stellar, pendulum = funding_keys(settings(keypair.secret + "\n", "//Alice\n"))
    assert stellar is not None and stellar.public_key == keypair.public_key
    assert pendulum is not None and pendulum.ss58_address


def test_unset_keys_are_none() -> None:
    assert funding_keys(settings()) == (None, None)


@pytest.mark.parametrize(
    ("stellar", "pendulum", "names"),
    [
        ("S" + "Q" * 55, "", "STELLAR_FUNDING_SECRET"),  # shaped like a seed, bad checksum
        ("", "0x" + "zz" * 32, "PENDULUM_FUNDING_SEED"),
    ],
)
def test_a_bad_key_fails_without_showing_it(stellar: str, pendulum: str, names: str) -> None:
    with pytest.raises(ValueError, match=names) as caught:
        funding_keys(settings(stellar, pendulum))
    shown = "".join(traceback.format_exception(caught.value))
    secret = stellar or pendulum
    assert secret not in shown and secret[2:20] not in shown, shown
