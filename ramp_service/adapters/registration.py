"""The chain and partner work of register and start, composed from the adapters.

Stellar (addresses, freshness, presigned envelopes) is wired to the Stellar adapter. The
Pendulum half waits for the Pendulum adapter and its devnet (issue 4): until then Pendulum
addresses are checked offline (SS58) and everything that needs the chain answers
CHAIN_UNAVAILABLE, so no ramp can be registered with half its transactions unverified.
"""

from __future__ import annotations

from stellar_sdk import StrKey
from substrateinterface.utils.ss58 import ss58_decode

from ramp_service.chains.errors import ChainError
from ramp_service.chains.stellar import StellarChain
from ramp_service.config import RampSettings
from ramp_service.domain.errors import ChainUnavailable
from ramp_service.domain.flows import Network
from ramp_service.domain.ramp import IssuedTx, PresignedTx, SigningAccount
from ramp_service.ports import Prepared, RegistrationPlan

PENDULUM_MISSING = "the Pendulum adapter is not available yet; ramps cannot be registered"


class ChainRegistration:
    """`RegistrationChains` over the real adapters."""

    def __init__(self, stellar: StellarChain) -> None:
        self._stellar = stellar

    def is_valid_address(self, network: Network, address: str) -> bool:
        """Stellar: an ed25519 public key (G...). Pendulum: SS58 with a valid checksum."""
        if network is Network.STELLAR:
            return bool(StrKey.is_valid_ed25519_public_key(address))
        try:
            ss58_decode(address)
        except ValueError:
            return False
        return True

    async def why_not_fresh(self, account: SigningAccount) -> str | None:
        """A Stellar ephemeral must not exist yet."""
        if account.network is not Network.STELLAR:
            raise ChainUnavailable(PENDULUM_MISSING)
        try:
            state = await self._stellar.account(account.address)
        except ChainError as exc:
            raise ChainUnavailable(f"Stellar: {exc.reason}") from exc
        return "the account already exists on Stellar" if state is not None else None

    async def prepare(self, plan: RegistrationPlan) -> Prepared:
        """Needs the Pendulum calls of every corridor."""
        raise ChainUnavailable(PENDULUM_MISSING)

    def verify_presigned(self, issued: IssuedTx, presigned: PresignedTx) -> str:
        """Check a presigned transaction against the issued one."""
        if issued.network is Network.STELLAR:
            return self._stellar.verify_presigned(issued.tx_data, presigned.tx_data, issued.signer)
        raise ChainUnavailable(PENDULUM_MISSING)


def build_registration_chains(settings: RampSettings) -> ChainRegistration:
    """The adapters for `settings`' networks."""
    return ChainRegistration(
        StellarChain(
            settings.horizon_url, settings.stellar_network_passphrase, settings.chain_timeout_s
        )
    )
