"""The devnet runtime's metadata (V14), built by our own code with scalecodec's encoders.

`RuntimeTypes` assembles a scale-info portable registry; `build_metadata()` returns the encoded
`MetadataVersioned` bytes the node serves from `state_getMetadata`, and the type ids the node
needs to decode calls and encode storage values and events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalecodec.base import RuntimeConfigurationObject
from scalecodec.type_registry import load_type_registry_preset

SS58_FORMAT = 56
CURRENCIES = ("Native", "USDC", "EURC", "ARST", "BRLA")


@dataclass
class RuntimeTypes:
    """A growing portable type registry."""

    types: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        name: str,
        definition: dict[str, Any],
        path: list[str] | None = None,
        params: list[dict[str, Any]] | None = None,
    ) -> int:
        """Register a type under `name` (our handle) and return its id."""
        type_id = len(self.types)
        self.types.append(
            {
                "id": type_id,
                "type": {"path": path or [], "params": params or [], "def": definition, "docs": []},
            }
        )
        self.ids[name] = type_id
        return type_id

    def primitive(self, name: str) -> int:
        """A primitive (u8, u32, bool...)."""
        return self.add(name, {"primitive": name})

    def _fields(self, fields: list[tuple[str | None, int, str | None]]) -> list[dict[str, Any]]:
        # Call arguments need a type name (scalecodec reads it), so default to our handle.
        names = {type_id: handle for handle, type_id in self.ids.items()}
        return [
            {"name": n, "type": t, "typeName": tn or names.get(t), "docs": []}
            for n, t, tn in fields
        ]

    def composite(
        self,
        name: str,
        fields: list[tuple[str | None, int, str | None]],
        path: list[str] | None = None,
        params: list[dict[str, Any]] | None = None,
    ) -> int:
        """A struct or newtype."""
        return self.add(name, {"composite": {"fields": self._fields(fields)}}, path, params)

    def variant(
        self,
        name: str,
        variants: list[tuple[str, list[tuple[str | None, int, str | None]], int]],
        path: list[str] | None = None,
        params: list[dict[str, Any]] | None = None,
    ) -> int:
        """An enum."""
        cases = [
            {"name": vn, "fields": self._fields(fs), "index": index, "docs": []}
            for vn, fs, index in variants
        ]
        return self.add(name, {"variant": {"variants": cases}}, path, params)


def build_types() -> tuple[RuntimeTypes, dict[str, Any]]:
    """Every type of the runtime and the pallet/extrinsic metadata that refers to them."""
    r = RuntimeTypes()
    u8, u16, u32, u64, u128 = (r.primitive(p) for p in ("u8", "u16", "u32", "u64", "u128"))
    r.primitive("bool")
    unit = r.add("()", {"tuple": []})
    bytes_ = r.add("Vec<u8>", {"sequence": {"type": u8}})
    a32 = r.add("[u8;32]", {"array": {"len": 32, "type": u8}})
    a20 = r.add("[u8;20]", {"array": {"len": 20, "type": u8}})
    a64 = r.add("[u8;64]", {"array": {"len": 64, "type": u8}})
    a65 = r.add("[u8;65]", {"array": {"len": 65, "type": u8}})
    a4 = r.add("[u8;4]", {"array": {"len": 4, "type": u8}})
    c32 = r.add("Compact<u32>", {"compact": {"type": u32}})
    c64 = r.add("Compact<u64>", {"compact": {"type": u64}})
    c128 = r.add("Compact<u128>", {"compact": {"type": u128}})
    account = r.composite(
        "AccountId32", [(None, a32, "[u8; 32]")], ["sp_core", "crypto", "AccountId32"]
    )
    h256 = r.composite("H256", [(None, a32, "[u8; 32]")], ["primitive_types", "H256"])
    address = r.variant(
        "MultiAddress",
        [
            ("Id", [(None, account, "AccountId")], 0),
            ("Index", [(None, c32, "AccountIndex")], 1),
            ("Raw", [(None, bytes_, "Vec<u8>")], 2),
            ("Address32", [(None, a32, "[u8; 32]")], 3),
            ("Address20", [(None, a20, "[u8; 20]")], 4),
        ],
        ["sp_runtime", "multiaddress", "MultiAddress"],
        [{"name": "AccountId", "type": account}, {"name": "AccountIndex", "type": unit}],
    )
    ed_sig = r.composite(
        "ed25519::Signature", [(None, a64, "[u8; 64]")], ["sp_core", "ed25519", "Signature"]
    )
    sr_sig = r.composite(
        "sr25519::Signature", [(None, a64, "[u8; 64]")], ["sp_core", "sr25519", "Signature"]
    )
    ec_sig = r.composite(
        "ecdsa::Signature", [(None, a65, "[u8; 65]")], ["sp_core", "ecdsa", "Signature"]
    )
    signature = r.variant(
        "MultiSignature",
        [
            ("Ed25519", [(None, ed_sig, None)], 0),
            ("Sr25519", [(None, sr_sig, None)], 1),
            ("Ecdsa", [(None, ec_sig, None)], 2),
        ],
        ["sp_runtime", "MultiSignature"],
    )
    era = r.variant(
        "Era",
        [("Immortal", [], 0)] + [(f"Mortal{i}", [(None, u8, None)], i) for i in range(1, 256)],
        ["sp_runtime", "generic", "era", "Era"],
    )
    currency = r.variant(
        "CurrencyId",
        [(c, [], i) for i, c in enumerate(CURRENCIES)],
        ["spacewalk_primitives", "CurrencyId"],
    )
    currencies = r.add("Vec<CurrencyId>", {"sequence": {"type": currency}})
    weight = r.composite(
        "Weight",
        [("ref_time", c64, "u64"), ("proof_size", c64, "u64")],
        ["sp_weights", "weight_v2", "Weight"],
    )
    dispatch_class = r.variant(
        "DispatchClass",
        [("Normal", [], 0), ("Operational", [], 1), ("Mandatory", [], 2)],
        ["frame_support", "dispatch", "DispatchClass"],
    )
    pays = r.variant("Pays", [("Yes", [], 0), ("No", [], 1)], ["frame_support", "dispatch", "Pays"])
    dispatch_info = r.composite(
        "DispatchInfo",
        [("weight", weight, "Weight"), ("class", dispatch_class, None), ("pays_fee", pays, None)],
        ["frame_support", "dispatch", "DispatchInfo"],
    )
    module_error = r.composite(
        "ModuleError",
        [("index", u8, "u8"), ("error", a4, "[u8; 4]")],
        ["sp_runtime", "ModuleError"],
    )
    dispatch_error = r.variant(
        "DispatchError",
        [
            ("Other", [], 0),
            ("CannotLookup", [], 1),
            ("BadOrigin", [], 2),
            ("Module", [(None, module_error, None)], 3),
        ],
        ["sp_runtime", "DispatchError"],
    )
    account_data = r.composite(
        "AccountData",
        [
            ("free", u128, "Balance"),
            ("reserved", u128, "Balance"),
            ("frozen", u128, "Balance"),
            ("flags", u128, "ExtraFlags"),
        ],
        ["pallet_balances", "types", "AccountData"],
    )
    account_info = r.composite(
        "AccountInfo",
        [
            ("nonce", u32, "Index"),
            ("consumers", u32, "RefCount"),
            ("providers", u32, "RefCount"),
            ("sufficients", u32, "RefCount"),
            ("data", account_data, "AccountData"),
        ],
        ["frame_system", "AccountInfo"],
    )
    token_data = r.composite(
        "TokenAccountData",
        [("free", u128, "Balance"), ("reserved", u128, "Balance"), ("frozen", u128, "Balance")],
        ["orml_tokens", "AccountData"],
    )
    token_key = r.add("(AccountId32, CurrencyId)", {"tuple": [account, currency]})
    # Calls, one enum per pallet.
    system_call = r.variant(
        "SystemCall",
        [("remark", [("remark", bytes_, "Vec<u8>")], 0)],
        ["frame_system", "pallet", "Call"],
    )
    balances_call = r.variant(
        "BalancesCall",
        [
            (
                "transfer_allow_death",
                [("dest", address, "AccountIdLookupOf<T>"), ("value", c128, "T::Balance")],
                0,
            ),
            (
                "transfer_keep_alive",
                [("dest", address, "AccountIdLookupOf<T>"), ("value", c128, "T::Balance")],
                3,
            ),
        ],
        ["pallet_balances", "pallet", "Call"],
    )
    tokens_call = r.variant(
        "TokensCall",
        [
            (
                "transfer",
                [("dest", address, None), ("currency_id", currency, None), ("amount", c128, None)],
                0,
            ),
        ],
        ["orml_tokens", "module", "Call"],
    )
    nabla_call = r.variant(
        "NablaCall",
        [
            (
                "approve",
                [("spender", account, None), ("currency", currency, None), ("amount", u128, None)],
                0,
            ),
            (
                "swap_exact_tokens_for_tokens",
                [
                    ("amount_in", u128, None),
                    ("amount_out_min", u128, None),
                    ("path", currencies, None),
                    ("to", account, None),
                    ("deadline", u64, None),
                ],
                1,
            ),
        ],
        ["nabla", "pallet", "Call"],
    )
    spacewalk_call = r.variant(
        "SpacewalkCall",
        [
            (
                "request_redeem",
                [("amount", u128, None), ("asset", currency, None), ("stellar_address", a32, None)],
                0,
            ),
        ],
        ["redeem", "pallet", "Call"],
    )
    xcm_call = r.variant(
        "XcmCall",
        [
            (
                "transfer_to_assethub",
                [("currency_id", currency, None), ("amount", u128, None), ("dest", account, None)],
                0,
            ),
        ],
        ["xtokens", "module", "Call"],
    )
    runtime_call = r.variant(
        "RuntimeCall",
        [
            ("System", [(None, system_call, None)], 0),
            ("Balances", [(None, balances_call, None)], 10),
            ("Tokens", [(None, tokens_call, None)], 11),
            ("Nabla", [(None, nabla_call, None)], 20),
            ("Spacewalk", [(None, spacewalk_call, None)], 21),
            ("XTokens", [(None, xcm_call, None)], 22),
        ],
        ["pendulum_runtime", "RuntimeCall"],
    )
    # Events.
    system_event = r.variant(
        "SystemEvent",
        [
            ("ExtrinsicSuccess", [("dispatch_info", dispatch_info, None)], 0),
            (
                "ExtrinsicFailed",
                [("dispatch_error", dispatch_error, None), ("dispatch_info", dispatch_info, None)],
                1,
            ),
        ],
        ["frame_system", "pallet", "Event"],
    )
    balances_event = r.variant(
        "BalancesEvent",
        [
            (
                "Transfer",
                [("from", account, None), ("to", account, None), ("amount", u128, None)],
                2,
            ),
            ("Minted", [("who", account, None), ("amount", u128, None)], 20),
        ],
        ["pallet_balances", "pallet", "Event"],
    )
    tokens_event = r.variant(
        "TokensEvent",
        [
            (
                "Transfer",
                [
                    ("currency_id", currency, None),
                    ("from", account, None),
                    ("to", account, None),
                    ("amount", u128, None),
                ],
                1,
            ),
            (
                "Deposited",
                [("currency_id", currency, None), ("who", account, None), ("amount", u128, None)],
                7,
            ),
            (
                "Withdrawn",
                [("currency_id", currency, None), ("who", account, None), ("amount", u128, None)],
                8,
            ),
        ],
        ["orml_tokens", "module", "Event"],
    )
    nabla_event = r.variant(
        "NablaEvent",
        [
            (
                "Approval",
                [
                    ("owner", account, None),
                    ("spender", account, None),
                    ("currency", currency, None),
                    ("amount", u128, None),
                ],
                0,
            ),
            (
                "Swap",
                [
                    ("sender", account, None),
                    ("amount_in", u128, None),
                    ("amount_out", u128, None),
                    ("to", account, None),
                ],
                1,
            ),
        ],
        ["nabla", "pallet", "Event"],
    )
    spacewalk_event = r.variant(
        "SpacewalkEvent",
        [
            (
                "RedeemExecuted",
                [
                    ("redeemer", account, None),
                    ("amount", u128, None),
                    ("asset", currency, None),
                    ("stellar_address", a32, None),
                ],
                0,
            ),
        ],
        ["redeem", "pallet", "Event"],
    )
    xcm_event = r.variant(
        "XcmEvent",
        [
            (
                "TransferredToAssetHub",
                [
                    ("sender", account, None),
                    ("currency_id", currency, None),
                    ("amount", u128, None),
                    ("dest", account, None),
                ],
                0,
            ),
        ],
        ["xtokens", "module", "Event"],
    )
    runtime_event = r.variant(
        "RuntimeEvent",
        [
            ("System", [(None, system_event, None)], 0),
            ("Balances", [(None, balances_event, None)], 10),
            ("Tokens", [(None, tokens_event, None)], 11),
            ("Nabla", [(None, nabla_event, None)], 20),
            ("Spacewalk", [(None, spacewalk_event, None)], 21),
            ("XTokens", [(None, xcm_event, None)], 22),
        ],
        ["pendulum_runtime", "RuntimeEvent"],
    )
    phase = r.variant(
        "Phase",
        [
            ("ApplyExtrinsic", [(None, u32, None)], 0),
            ("Finalization", [], 1),
            ("Initialization", [], 2),
        ],
        ["frame_system", "Phase"],
    )
    topics = r.add("Vec<H256>", {"sequence": {"type": h256}})
    record = r.composite(
        "EventRecord",
        [("phase", phase, None), ("event", runtime_event, None), ("topics", topics, None)],
        ["frame_system", "EventRecord"],
    )
    records = r.add("Vec<EventRecord>", {"sequence": {"type": record}})
    # Signed extensions.
    check_nonce = r.composite(
        "CheckNonce",
        [(None, c32, "T::Index")],
        ["frame_system", "extensions", "check_nonce", "CheckNonce"],
    )
    check_mortality = r.composite(
        "CheckMortality",
        [(None, era, "Era")],
        ["frame_system", "extensions", "check_mortality", "CheckMortality"],
    )
    charge = r.composite(
        "ChargeTransactionPayment",
        [(None, c128, "BalanceOf<T>")],
        ["pallet_transaction_payment", "ChargeTransactionPayment"],
    )
    extensions = [
        ("CheckSpecVersion", unit, u32),
        ("CheckTxVersion", unit, u32),
        ("CheckGenesis", unit, h256),
        ("CheckMortality", check_mortality, h256),
        ("CheckNonce", check_nonce, unit),
        ("CheckWeight", unit, unit),
        ("ChargeTransactionPayment", charge, unit),
    ]
    extra = r.add("Extra", {"tuple": [ty for _, ty, _ in extensions]})
    extrinsic = r.add(
        "UncheckedExtrinsic",
        {"sequence": {"type": u8}},
        ["sp_runtime", "generic", "unchecked_extrinsic", "UncheckedExtrinsic"],
        [
            {"name": "Address", "type": address},
            {"name": "Call", "type": runtime_call},
            {"name": "Signature", "type": signature},
            {"name": "Extra", "type": extra},
        ],
    )
    runtime = r.composite("Runtime", [], ["pendulum_runtime", "Runtime"])

    def errors(name: str, path: list[str], names: list[str]) -> dict[str, int]:
        return {"ty": r.variant(name, [(n, [], i) for i, n in enumerate(names)], path)}

    system_error = errors("SystemError", ["frame_system", "pallet", "Error"], ["InvalidSpecName"])
    balances_error = errors(
        "BalancesError",
        ["pallet_balances", "pallet", "Error"],
        ["VestingBalance", "LiquidityRestrictions", "InsufficientBalance"],
    )
    tokens_error = errors(
        "TokensError",
        ["orml_tokens", "module", "Error"],
        ["BalanceTooLow", "AmountIntoBalanceFailed", "InsufficientBalance"],
    )
    nabla_error = errors(
        "NablaError",
        ["nabla", "pallet", "Error"],
        ["NoPool", "DeadlinePassed", "InsufficientAllowance", "BelowMinimum"],
    )
    spacewalk_error = errors(
        "SpacewalkError",
        ["redeem", "pallet", "Error"],
        ["InvalidStellarAddress", "RedeemFailed", "InsufficientBalance"],
    )
    xcm_error = errors(
        "XcmError",
        ["xtokens", "module", "Error"],
        ["NotSupported", "TransferFailed", "InsufficientBalance"],
    )

    def storage(prefix: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"prefix": prefix, "entries": entries}

    def entry(name: str, kind: dict[str, Any], default: str) -> dict[str, Any]:
        return {
            "name": name,
            "modifier": "Default",
            "type": kind,
            "default": default,
            "documentation": [],
        }

    zero_info = "0x" + "00" * 80
    pallets = [
        {
            "name": "System",
            "index": 0,
            "calls": {"ty": system_call},
            "event": {"ty": system_event},
            "error": system_error,
            "constants": [
                {
                    "name": "SS58Prefix",
                    "type": u16,
                    "value": "0x" + SS58_FORMAT.to_bytes(2, "little").hex(),
                    "documentation": [],
                }
            ],
            "storage": storage(
                "System",
                [
                    entry(
                        "Account",
                        {
                            "Map": {
                                "hashers": ["Blake2_128Concat"],
                                "key": account,
                                "value": account_info,
                            }
                        },
                        zero_info,
                    ),
                    entry("Events", {"Plain": records}, "0x00"),
                    entry("Number", {"Plain": u32}, "0x00000000"),
                ],
            ),
        },
        {
            "name": "Balances",
            "index": 10,
            "calls": {"ty": balances_call},
            "event": {"ty": balances_event},
            "error": balances_error,
            "storage": None,
            "constants": [
                {
                    "name": "ExistentialDeposit",
                    "type": u128,
                    "value": "0x" + (10**9).to_bytes(16, "little").hex(),
                    "documentation": [],
                }
            ],
        },
        {
            "name": "Tokens",
            "index": 11,
            "calls": {"ty": tokens_call},
            "event": {"ty": tokens_event},
            "error": tokens_error,
            "constants": [],
            "storage": storage(
                "Tokens",
                [
                    entry(
                        "Accounts",
                        {
                            "Map": {
                                "hashers": ["Blake2_128Concat", "Twox64Concat"],
                                "key": token_key,
                                "value": token_data,
                            }
                        },
                        "0x" + "00" * 48,
                    )
                ],
            ),
        },
        {
            "name": "Nabla",
            "index": 20,
            "calls": {"ty": nabla_call},
            "event": {"ty": nabla_event},
            "error": nabla_error,
            "constants": [],
            "storage": None,
        },
        {
            "name": "Spacewalk",
            "index": 21,
            "calls": {"ty": spacewalk_call},
            "event": {"ty": spacewalk_event},
            "error": spacewalk_error,
            "constants": [],
            "storage": None,
        },
        {
            "name": "XTokens",
            "index": 22,
            "calls": {"ty": xcm_call},
            "event": {"ty": xcm_event},
            "error": xcm_error,
            "constants": [],
            "storage": None,
        },
    ]
    v14 = {
        "types": {"types": r.types},
        "pallets": pallets,
        "extrinsic": {
            "ty": extrinsic,
            "version": 4,
            "signed_extensions": [
                {"identifier": name, "ty": ty, "additional_signed": add}
                for name, ty, add in extensions
            ],
        },
        "runtime_type": runtime,
    }
    return r, v14


def runtime_config() -> RuntimeConfigurationObject:
    """A scalecodec configuration with the legacy/core presets loaded."""
    config = RuntimeConfigurationObject()
    config.update_type_registry(load_type_registry_preset("core"))
    return config


def build_metadata() -> tuple[bytes, RuntimeTypes]:
    """Encoded `MetadataVersioned` ("meta" magic + V14) and the registry handles."""
    registry, v14 = build_types()
    encoded = (
        runtime_config()
        .create_scale_object("MetadataVersioned")
        .encode(("0x6d657461", {"V14": v14}))
    )
    return bytes(encoded.data), registry
