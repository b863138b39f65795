"""``vipsense keys``: the data key that encrypts ID and mobile numbers at rest (:mod:`vipsense.crypto`).

``keys rotate PROFILE`` seals every ID and mobile number of the profile's stores again under the
current key, with a new key id, in one transaction per store, and then says what the bank must do with
the old key.  Where the key comes from decides what "the current key" is:

* ``privacy.data_key`` names it: the bank first puts a new key in its secrets file as ``data_key`` and
  lists the old one under ``privacy.retired_data_keys``; ``rotate`` then moves every value to the new
  key, after which the retired one may be destroyed.
* No ``data_key``: the data directory's own key file.  ``rotate`` makes a new key in it, moves every
  value, and removes the old key from the file itself.

Run it while the branch is stopped: a branch started before the rotation still encrypts with the key it
loaded.  The rotation is audited as ``config_change``, by the operating-system account that runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config.profile import Profile
from ..crypto import LOCAL_KEY_FILE, CipherError, DataKey, LocalKeyFile, new_key
from ..i18n import _, format_number
from ..identity.standalone import build
from ..storage.audit import AuditAction, AuditResult, open_audit_log
from . import help_of
from .common import EXIT_OK, CliError, audit_source, data_dir_help, describe, load, plugin_host, profile_help


def cmd_new(args: argparse.Namespace) -> int:
    """A fresh random key, printed once, for the secrets file; nothing is stored."""
    print(new_key())
    return EXIT_OK


def _stores(profile: Profile, store_id: str | None) -> list[Any]:
    """The stores whose personal data is encrypted (they can ``reencrypt``), built, not opened."""
    host = plugin_host()
    configs = [s for s in profile.stores if store_id is None or s.id == store_id]
    if store_id is not None and not configs:
        ids = ", ".join(s.id for s in profile.stores)
        raise CliError(_("no store has id {store!r} (store ids: {ids})").format(store=store_id, ids=ids))
    stores = []
    for cfg in configs:
        try:
            store = build(host, profile, cfg)
        except Exception as exc:
            raise CliError(
                _("store {id} ({type}) cannot start: {error}").format(
                    id=cfg.id, type=cfg.type, error=describe(exc)
                )
            ) from None
        if hasattr(store, "reencrypt"):
            stores.append((cfg, store))
        elif store_id is not None:
            raise CliError(
                _("store {id} ({type}) keeps no personal data encrypted by vipsense").format(
                    id=cfg.id, type=cfg.type
                )
            )
    if not stores:
        raise CliError(
            _("no store of {profile} keeps personal data encrypted by vipsense").format(
                profile=profile.source.name
            )
        )
    return stores


def _rotate_store(cfg: Any, store: Any) -> tuple[dict[str, int], dict[str, int], str]:
    """``(moved per old key id, values per key id now, current key id)`` of one store.  What was
    under an old key is counted before the store opens: opening re-seals what its seed files list."""
    try:
        before = store.data_key_ids()
        store.open()
    except Exception as exc:
        raise CliError(
            _("store {id} ({type}) cannot be opened: {error}").format(
                id=cfg.id, type=cfg.type, error=describe(exc)
            )
        ) from None
    try:
        current = store.cipher.current.key_id
        moved = store.reencrypt()
        for kid, n in before.items():
            if kid != current:
                moved[kid] = max(moved.get(kid, 0), n)
        return moved, store.data_key_ids(), current
    except (CipherError, OSError) as exc:
        raise CliError(_("store {id}: {error}").format(id=cfg.id, error=describe(exc))) from None
    finally:
        store.close()


def cmd_rotate(args: argparse.Namespace) -> int:
    profile = load(args.profile, plugin_host(), args.data_dir)
    local = LocalKeyFile(profile.data_dir / LOCAL_KEY_FILE)
    configured = profile.privacy.data_key is not None
    try:
        old_local = local.read() if local.exists() else []
    except (CipherError, OSError) as exc:
        raise CliError(describe(exc)) from None
    audit = open_audit_log(profile)
    source = audit_source()
    actor = source.split(":", 1)[1].split("@", 1)[0]
    outcome, detail, lines = AuditResult.ERROR, "", []
    try:
        stores = _stores(profile, args.store)  # built, not opened: a cipher loads its keys on first use
        if not configured:  # the new key first: it encrypts, the old ones still decrypt meanwhile
            try:
                local.write([new_key(), *old_local])
            except OSError as exc:
                raise CliError(describe(exc)) from None
        results = [(cfg, *_rotate_store(cfg, store)) for cfg, store in stores]
        current = results[0][3]
        in_use = {kid for *_first, counts, _current in results for kid, n in counts.items() if n}
        for cfg, moved, _counts, key_id in results:
            n = sum(moved.values())
            if n:
                froms = ", ".join(sorted(moved))
                lines.append(
                    _("store {id}: {n} values moved from data key {old} to {new}").format(
                        id=cfg.id, n=format_number(n), old=froms, new=key_id
                    )
                )
            else:
                lines.append(
                    _("store {id}: every value was under data key {key} already").format(
                        id=cfg.id, key=key_id
                    )
                )
        lines += _advice(profile, local, old_local, current, in_use, configured, results)
        outcome = AuditResult.SUCCESS
        detail = "; ".join(lines[: len(results)])
    except CliError as exc:
        detail = str(exc)
        raise
    finally:
        audit.append(
            actor,
            "",
            profile.branch.id,
            AuditAction.CONFIG_CHANGE,
            "data key: rotate",
            source,
            outcome,
            detail,
        )
        audit.close()
    print("\n".join(lines))
    return EXIT_OK


def _advice(
    profile: Profile,
    local: LocalKeyFile,
    old_local: list[str],
    current: str,
    in_use: set[str],
    configured: bool,
    results: list[Any],
) -> list[str]:
    """What the bank must do now with the old key, in words."""
    lines = []
    local_ids = {DataKey(k, str(local.path)).key_id for k in old_local}
    if not configured:
        if in_use - {current}:
            still = ", ".join(sorted(in_use - {current}))
            return [
                _(
                    "values are still under data key {key} (written while this ran: is the branch running?);"
                    " {path} keeps the old key: stop the branch and run vipsense keys rotate again"
                ).format(key=still, path=local.path)
            ]
        local.write([k for k in local.read() if DataKey(k, str(local.path)).key_id == current])
        lines.append(
            _(
                "the old key was removed from {path}; backups of the identity store made before now can be"
                " read only with a copy of {path} made with them: keep such copies apart from the backups,"
                " and destroy them when the backups expire"
            ).format(path=local.path)
        )
        lines.append(
            _("a branch names its own key instead: privacy.data_key: !secret data_key (vipsense keys new)")
        )
        return lines
    if local_ids and not local_ids & in_use:
        local.path.unlink(missing_ok=True)
        lines.append(
            _("{path}, the key made before privacy.data_key was set, is no longer needed: deleted").format(
                path=local.path
            )
        )
    retired_ids = {DataKey(s.reveal(), s.source).key_id: s.source for s in profile.privacy.retired_data_keys}
    free = sorted(kid for kid in retired_ids if kid not in in_use)
    if free:
        names = ", ".join(f"{kid} ({retired_ids[kid].removeprefix('secret:')})" for kid in free)
        lines.append(
            _(
                "no value is under the retired data key {keys} any more: remove it from"
                " privacy.retired_data_keys and from the secrets file, and destroy every copy of it once no"
                " backup made before now must stay readable"
            ).format(keys=names)
        )
    moved_any = any(sum(moved.values()) for _cfg, moved, *_rest in results)
    if not moved_any and not free and not local_ids:
        lines.append(
            _(
                "nothing to rotate: every value is under data key {key} (privacy.data_key). To rotate, put a"
                " new key in the secrets file as data_key (vipsense keys new makes one), list the old one"
                " under privacy.retired_data_keys, and run vipsense keys rotate again"
            ).format(key=current)
        )
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help=help_of("keys"))
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    rotate = keys_sub.add_parser(
        "rotate", help=_("encrypt every ID and mobile number again under a new data key (branch stopped)")
    )
    rotate.add_argument("profile", help=profile_help())
    rotate.add_argument("--data-dir", help=data_dir_help())
    rotate.add_argument(
        "--store", metavar="ID", help=_("only this store (default: every store that encrypts)")
    )
    rotate.set_defaults(func=cmd_rotate)

    new = keys_sub.add_parser("new", help=_("print a new random data key for the secrets file"))
    new.set_defaults(func=cmd_new)
