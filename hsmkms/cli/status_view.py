"""`hsmkms status` for a person: one section per part, problems first."""

from __future__ import annotations

from typing import Any

from hsmkms.cli.tables import section, table, when


def _value(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _token(token: dict[str, Any]) -> str:
    if not token.get("Reachable"):
        return section("Token", [("label", token["Label"]), ("module", token["Module"]),
                                 ("reachable", f"no: {token.get('Error', '')}")])  # fmt: skip
    memory = f"public {_value(token['FreePublicMemory'])}, private " + _value(
        token["FreePrivateMemory"]
    )
    return section("Token", [
        ("label", f"{token['Label']} (serial {token['Serial']})"),
        ("model", f"{token['Manufacturer']} {token['Model']}, firmware {token['Firmware']}"),
        ("module", token["Module"]),
        ("reachable", "yes"),
        ("key material", f"{token['KeyMaterialObjects']} objects of hsmkms"),
        ("free memory", memory + " (as the token says)"),
        ("sessions", f"{_value(token['Sessions'])} open (at most {_value(token['MaxSessions'])})"),
    ])  # fmt: skip


def _database(database: dict[str, Any]) -> str:
    reachable = "yes" if database.get("Reachable") and "Error" not in database else "no"
    if "Error" in database:
        reachable += f": {database['Error']}"
    return section("Database", [("url", database["Url"]), ("reachable", reachable)])


def _domain(domain: dict[str, Any] | None) -> str:
    if domain is None:
        return section("Security domain", [("domain", "unknown (token unreachable)")])
    if domain["Domain"] is None:
        return section("Security domain", [("domain", "none"), ("custody", domain["Custody"])])
    custodians = domain["Custodians"]
    split = "unknown (joined)" if custodians is None else f"{domain['Threshold']} of {custodians}"
    return section("Security domain", [
        ("domain", f"{domain['Domain']} (check value {domain['CheckValue']})"),
        ("custody", domain["Custody"]),
        ("custodians", split + " shares needed"),
    ])  # fmt: skip


def _audit(audit: dict[str, Any]) -> str:
    head = section("Audit trail", [
        ("trail", f"{_value(audit['Trail'])} (scope {audit['Scope']}, {audit['Durability']})"),
        ("directory", audit["Directory"]),
    ])  # fmt: skip
    rows = [
        (
            end["Chain"], str(end["Files"]),
            _value((end["LastRecord"] or {}).get("Sequence")),
            when((end["LastRecord"] or {}).get("Time")),
            "-" if not end["LastCheckpoint"] else
            f"#{end['LastCheckpoint']['Number']} at record {end['LastCheckpoint']['Sequence']}, "
            + when(end["LastCheckpoint"]["Time"]),
        )
        for end in audit["Chains"]
    ]  # fmt: skip
    if not rows:
        return head + "\n  no records yet"
    chains = table(("CHAIN", "FILES", "RECORDS", "LAST RECORD", "LAST CHECKPOINT"), rows)
    return head + "\n" + "\n".join("  " + line for line in chains.splitlines())


def _keys(keys: dict[str, Any] | None) -> str:
    if keys is None:
        return section("Keys", [("keys", "unknown (token or database unreachable)")])
    states = ", ".join(f"{n} {state}" for state, n in keys["ByState"].items()) or "none"
    pairs = [("keys", f"{keys['Total']} ({states})")]
    for name, member, entries in (
        ("deletion", "DeletionDate", keys["PendingDeletion"]),
        ("rotation due", "NextRotationDate", keys["RotationDueWithin30Days"]),
        ("material expiring", "ValidTo", keys["ImportedMaterialExpiringWithin30Days"]),
    ):
        listed = "; ".join(f"{e['KeyId']} {when(e[member])}" for e in entries[:5])
        more = f" (+{len(entries) - 5} more)" if len(entries) > 5 else ""
        pairs.append((name, listed + more if entries else "none within 30 days"))
    return section("Keys", pairs)


def _stores(report: dict[str, Any]) -> str:
    if "CustomKeyStores" not in report:
        return section("Key stores", [("stores", "unknown (token or database unreachable)")])
    stores = report["CustomKeyStores"]
    listed = "; ".join(
        f"{s['CustomKeyStoreId']} {s['Name']} ({s['Type']}, {s['ConnectionState']})" for s in stores
    )
    xks = report["XksProxy"]
    prefixes = ", ".join("/" + p if p else "/" for p in xks["UriPrefixes"])
    return section("Key stores", [
        ("custom key stores", listed or "none"),
        ("XKS proxy", f"prefixes {prefixes}; {xks['Credentials']} credentials"),
    ])  # fmt: skip


def status_text(report: dict[str, Any]) -> str:
    backup = report["LastBackup"]
    last = "none recorded" if backup is None else (
        f"{when(backup['Time'])} ({backup['AgeDays']} days ago) to {backup['File']}"
    )  # fmt: skip
    head = section(f"hsmkms {report['Version']}", [
        ("data dir", report["DataDir"]),
        ("account / region", f"{report['Account']} / {report['Region']}"),
        ("problems", "none" if not report["Problems"] else str(len(report["Problems"]))),
    ])  # fmt: skip
    problems = "\n".join(f"  ! {problem}" for problem in report["Problems"])
    parts = [
        head + ("\n" + problems if problems else ""),
        _token(report["Token"]),
        _database(report["Database"]),
        _domain(report.get("SecurityDomain")),
        _audit(report["Audit"]),
        section("Backup", [("last", last)]),
        _keys(report.get("Keys")),
        _stores(report),
    ]
    return "\n\n".join(parts)
