"""Funding keys from settings: whitespace a Secret file leaves is dropped, and a bad value
fails without the value appearing anywhere in the error or its traceback."""

from __future__ import annotations

import traceback

import pytest
from pydantic import SecretStr
from stellar_sdk import Keypair

from ramp_service.adapters.registration import funding_accounts, funding_keys
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


ALICE = "6ftBYTotU4mmCuvUqJvk6qEP7uCzzz771pTMoxcbHFb9rcPv"  # //Alice in Pendulum's format 56


def test_the_api_needs_only_the_public_funding_accounts() -> None:
    """Configured alone (no secrets, as the API's pods are deployed), the accounts are used;
    with only the secrets (local runs) they are derived."""
    keypair = Keypair.random()
    given = RampSettings(stellar_funding_account=keypair.public_key, pendulum_funding_account=ALICE)
    assert funding_accounts(given) == (keypair.public_key, ALICE)
    assert funding_accounts(settings(keypair.secret, "//Alice")) == (keypair.public_key, ALICE)
    assert funding_accounts(settings()) == ("", "")


def test_a_funding_account_that_is_not_one_or_not_the_secret_s_is_refused() -> None:
    keypair, other = Keypair.random(), Keypair.random()
    for bad, match in (
        (RampSettings(stellar_funding_account="GNOPE"), "STELLAR_FUNDING_ACCOUNT is not a"),
        (RampSettings(pendulum_funding_account="0x" + "00" * 32), "PENDULUM_FUNDING_ACCOUNT"),
        (
            RampSettings(
                stellar_funding_account=other.public_key,
                stellar_funding_secret=SecretStr(keypair.secret),
            ),
            "not STELLAR_FUNDING_SECRET's account",
        ),
    ):
        with pytest.raises(ValueError, match=match) as refused:
            funding_accounts(bad)
        assert keypair.secret not in "".join(traceback.format_exception(refused.value))
