"""``crmflow``: serve | demo | db | users | keys | sync | config | sandbox.

Every command reads the same settings (``CRMFLOW_*`` and ``.env``). Problems a
user can fix (missing or malformed settings, wrong keys, duplicate users) end the
command with a message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
)
from rich.table import Table

from crmflow.config import Settings, load_settings
from crmflow.domain.tenancy import Role
from crmflow.errors import CrmflowError
from crmflow.logs import configure_logging

if TYPE_CHECKING:
    from crmflow.sandbox.vendors import SandboxApp

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


# ------------------------------------------------------------------- commands


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = load_settings()
    table = Table("variable", "effective value", box=None)
    for key, value in settings.masked().items():
        table.add_row(key, value)
    out.print(table)
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from crmflow.store.crypto import generate_key_entry

    entry = generate_key_entry(args.id)
    out.print(entry, soft_wrap=True)
    err.print(
        "Append this entry (comma-separated) to CRMFLOW_ENCRYPTION_KEYS; the last key "
        "encrypts new secrets. Then run `crmflow keys rotate` to re-encrypt old ones."
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from crmflow.store.crypto import Vault
    from crmflow.store.db import Database
    from crmflow.store.keys import count_secrets, rotate, verify_keys

    settings = load_settings()
    vault = Vault.from_setting(settings.encryption_keys)

    async def run() -> None:
        admin = Database(settings.effective_admin_database_url)
        try:
            await verify_keys(admin, vault)
            total = await count_secrets(admin)
            with Progress(
                TextColumn("re-encrypting secrets"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=False,
            ) as progress:
                task = progress.add_task("rotate", total=total)
                report = await rotate(admin, vault, lambda n: progress.advance(task, n))
                progress.update(task, completed=total)
            out.print(
                f"Rotated {report.rotated} of {report.total} secrets to key "
                f"{vault.current_key_id!r} ({report.already_current} were already current)."
            )
        finally:
            await admin.dispose()

    asyncio.run(run())
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from crmflow.store.migrate import current_revision, upgrade

    settings = load_settings()
    upgrade(settings.effective_admin_database_url, settings.effective_database_url)
    out.print(
        f"Database at revision {current_revision(settings.effective_admin_database_url)}."
    )
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CrmflowError("No terminal to ask for a password; use --password-stdin.")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CrmflowError("The passwords do not match.")
    return first


def cmd_users_create(args: argparse.Namespace) -> int:
    from crmflow.store.db import Database
    from crmflow.store.identity import (
        find_organization,
        provision_organization,
        provision_user,
    )

    settings = load_settings()
    password = _read_password(args)

    async def run() -> None:
        admin = Database(settings.effective_admin_database_url)
        try:
            org_id = await find_organization(admin, args.org)
            if org_id is None:
                if not args.create_org:
                    raise CrmflowError(
                        f"No organization with slug {args.org!r}; add --create-org to create it."
                    )
                org_id = await provision_organization(
                    admin, args.org_name or args.org, args.org
                )
            user_id = await provision_user(
                admin,
                args.email,
                password,
                display_name=args.name,
                organization_id=org_id,
                role=Role(args.role),
            )
            out.print(
                f"Created user {args.email} ({user_id}) as {args.role} of {args.org}."
            )
        finally:
            await admin.dispose()

    asyncio.run(run())
    return 0


def _serve(
    settings: Settings,
    host: str,
    port: int,
    banner: Callable[[], None] | None,
    sandbox: SandboxApp | None = None,
) -> int:
    import uvicorn

    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.heap import freeze_startup_objects
    from crmflow.jobs.runner import ServeSync
    from crmflow.web.app import create_app

    configure_logging(settings.log_level)
    mounts = None
    if sandbox is not None:
        from crmflow.demo import SANDBOX_PREFIX

        mounts = {SANDBOX_PREFIX: sandbox.app}

    async def run() -> None:
        services = await start_services(settings)
        try:
            integrations = Integrations(services.db, services.vault, settings)
            app = create_app(
                settings,
                services,
                mounts=mounts,
                on_shutdown=[sandbox.shutdown] if sandbox else (),
            )
            # one connections service per process: the web app and the
            # scheduled syncs share its single-flight token refreshes
            app.state.integrations = integrations
            # log_config=None keeps the redacting handler of configure_logging
            config = uvicorn.Config(
                app, host=host, port=port, log_config=None, lifespan="on"
            )
            server = uvicorn.Server(config)
            if banner is not None:
                banner()
            async with contextlib.AsyncExitStack() as stack:
                if settings.in_process_sync:
                    await stack.enter_async_context(ServeSync(services, integrations))
                freeze_startup_objects()
                await server.serve()
        finally:
            await services.close()

    asyncio.run(run())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    return _serve(
        settings,
        host,
        port,
        lambda: out.print(f"crmflow serving on http://{host}:{port}/"),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from crmflow.demo import DEMO_LOGINS, demo_settings, seed, start_sandbox
    from crmflow.store.db import Database
    from crmflow.store.migrate import upgrade

    data_dir = Path(args.data_dir) if args.data_dir else Path(".data")
    settings = demo_settings(
        data_dir, host=args.host or "127.0.0.1", port=args.port or 8000
    )
    host, port = settings.host, settings.port
    upgrade(settings.effective_admin_database_url, settings.effective_database_url)
    sandbox = start_sandbox(settings)

    async def run_seed() -> bool:
        admin = Database(settings.effective_admin_database_url)
        try:
            return await seed(admin)
        finally:
            await admin.dispose()

    seeded = asyncio.run(run_seed())

    def banner() -> None:
        out.print(
            f"[bold]crmflow demo[/] ({'seeded new' if seeded else 'existing'} data in {data_dir}/)"
        )
        out.print(f"  URL:    http://{host}:{port}/")
        for login in DEMO_LOGINS:
            out.print(
                f"  login:  {login.email}  password: {login.password}  ({login.role})"
            )
        out.print(f"  API:    http://{host}:{port}/docs")
        out.print(
            f"  sandbox: {settings.public_base_url}sandbox/ (Google and Microsoft;"
        )
        out.print("           each demo login has a seeded account there)")
        out.print("Press Ctrl+C to stop.")

    return _serve(settings, host, port, banner, sandbox)


async def _acting_user(
    settings: Settings, args: argparse.Namespace
) -> tuple[uuid.UUID, uuid.UUID | None]:
    """The user (``--user``) and organization (``--org``) a command acts as.

    Raises:
        NotFound: no such active user or organization.
    """
    from crmflow.errors import NotFound
    from crmflow.store.db import Database
    from crmflow.store.identity import find_organization, find_user

    admin = Database(settings.effective_admin_database_url)
    try:
        user_id = await find_user(admin, args.user)
        org_id = await find_organization(admin, args.org) if args.org else None
    finally:
        await admin.dispose()
    if user_id is None:
        raise NotFound(f"No active user {args.user!r}.")
    if args.org and org_id is None:
        raise NotFound(f"No organization {args.org!r}.")
    return user_id, org_id


def cmd_sync_calendar(args: argparse.Namespace) -> int:
    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.domain.calendar_accounts import RunStatus, SyncRunInfo, SyncType
    from crmflow.errors import NotFound
    from crmflow.services.calendar_sync import CalendarSync
    from crmflow.store.identity import enter_organization

    settings = load_settings()

    async def run() -> list[tuple[str, SyncRunInfo]]:
        user_id, org_id = await _acting_user(settings, args)
        services = await start_services(settings)
        try:
            ctx = await enter_organization(services.db, user_id, org_id)
            service = CalendarSync(Integrations(services.db, services.vault, settings))
            accounts = [
                a
                for a in await service.accounts(ctx)
                if a.is_enabled and (args.account is None or str(a.id) == args.account)
            ]
            if args.account is not None and not accounts:
                raise NotFound(
                    f"{args.user} has no enabled calendar account {args.account}."
                )
            runs: list[tuple[str, SyncRunInfo]] = []
            for account in accounts:
                with Progress(
                    TextColumn(f"{account.name}: " + "{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    console=err,
                    transient=True,
                ) as progress:
                    task = progress.add_task("starting", total=None)

                    def report(
                        stage: str,
                        done: int,
                        total: int | None,
                        progress: Progress = progress,
                        task: TaskID = task,
                    ) -> None:
                        progress.update(
                            task, description=stage, completed=done, total=total
                        )

                    run = await service.sync(
                        ctx,
                        account.id,
                        sync_type=SyncType.FULL if args.full else SyncType.MANUAL,
                        confirm_mass_delete=args.confirm_mass_delete,
                        progress=report,
                    )
                    runs.append((account.name, run))
            return runs
        finally:
            await services.close()

    runs = asyncio.run(run())
    if not runs:
        out.print(f"{args.user} has no enabled calendar to sync.")
        return 0
    table = Table(box=None)
    table.add_column("calendar", overflow="fold")
    for heading in ("status", "imported", "exported", "updated", "deleted"):
        table.add_column(heading)
    table.add_column("conflicts")
    table.add_column("ms")
    for name, r in runs:
        table.add_row(
            name,
            r.status.value,
            *(
                str(n)
                for n in (
                    r.events_imported,
                    r.events_exported,
                    r.events_updated,
                    r.events_deleted,
                    r.conflicts,
                    r.duration_ms or 0,
                )
            ),
        )
    out.print(table)
    for name, r in runs:
        for e in r.errors:
            err.print(f"[yellow]{name}: {e.message}[/]", soft_wrap=True)
    return 0 if all(r.status is RunStatus.SUCCESS for _, r in runs) else 1


def cmd_sync_mail(args: argparse.Namespace) -> int:
    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.domain.mail import MailSyncResult
    from crmflow.errors import NotFound
    from crmflow.services.mail import MailService
    from crmflow.store.identity import enter_organization

    settings = load_settings()

    async def run() -> list[tuple[str, MailSyncResult]]:
        user_id, org_id = await _acting_user(settings, args)
        services = await start_services(settings)
        try:
            ctx = await enter_organization(services.db, user_id, org_id)
            service = MailService(Integrations(services.db, services.vault, settings))
            accounts = [
                a
                for a in await service.accounts(ctx)
                if args.account is None or str(a.id) == args.account
            ]
            if args.account is not None and not accounts:
                raise NotFound(f"{args.user} has no mailbox {args.account}.")
            results = []
            for account in accounts:
                with err.status(f"{account.email_address}: fetching mail"):
                    results.append(
                        (
                            account.email_address,
                            await service.sync(ctx, account.id, full=args.full),
                        )
                    )
            return results
        finally:
            await services.close()

    results = asyncio.run(run())
    if not results:
        out.print(f"{args.user} has no connected mailbox.")
        return 0
    table = Table(box=None)
    table.add_column("mailbox", overflow="fold")
    for heading in ("imported", "updated", "removed", "resynced"):
        table.add_column(heading)
    for name, r in results:
        table.add_row(
            name,
            str(r.imported),
            str(r.updated),
            str(r.removed),
            "yes" if r.resynced else "no",
        )
    out.print(table)
    for _name, r in results:
        if r.error:
            err.print(f"[yellow]{r.error}[/]", soft_wrap=True)
    return 0 if all(r.error is None for _, r in results) else 1


def cmd_worker(args: argparse.Namespace) -> int:
    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.errors import ConfigError
    from crmflow.heap import freeze_startup_objects
    from crmflow.jobs.queue import run_worker

    settings = load_settings()
    if not settings.effective_admin_database_url.startswith("postgresql"):
        raise ConfigError(
            "crmflow worker needs PostgreSQL (CRMFLOW_DATABASE_URL and "
            "CRMFLOW_ADMIN_DATABASE_URL); on the SQLite default crmflow serve runs "
            "the scheduled syncs itself."
        )
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1.")
    configure_logging(settings.log_level)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)

    async def run() -> None:
        services = await start_services(settings)
        try:
            integrations = Integrations(services.db, services.vault, settings)
            freeze_startup_objects()
            await run_worker(
                services,
                integrations,
                concurrency=args.concurrency,
                name=args.name,
                imap_idle=args.imap_idle,
            )
        finally:
            await services.close()

    asyncio.run(run())
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    from crmflow.store.db import Database
    from crmflow.store.schedule import AccountSchedule, ScheduleStore

    settings = load_settings()

    async def run() -> list[AccountSchedule]:
        admin = Database(settings.effective_admin_database_url)
        try:
            async with admin.admin() as session:
                return await ScheduleStore(session).overview()
        finally:
            await admin.dispose()

    accounts = asyncio.run(run())
    where = (
        "in crmflow serve (in-process)"
        if settings.in_process_sync
        else "by crmflow worker processes"
    )
    out.print(
        f"Scheduled syncs every {settings.sync_interval_s} s "
        f"(±{settings.sync_jitter:.0%}), run {where}."
    )
    if not accounts:
        out.print("No calendar or mailbox is connected.")
        return 0
    table = Table(box=None)
    for heading in ("kind", "account", "user", "last sync", "next sync", "failures"):
        table.add_column(heading, overflow="fold")
    for a in accounts:
        table.add_row(
            a.kind.value,
            a.name,
            a.user_email,
            _when(a.last_synced_at),
            _when(a.next_sync_at) if a.next_sync_at else "due now",
            f"[red]{a.failures}[/]" if a.failing else str(a.failures),
        )
    out.print(table)
    failing = [a for a in accounts if a.failing]
    for a in failing:
        err.print(
            f"[yellow]{a.kind.value} {a.name} ({a.user_email}) keeps failing: "
            f"{a.last_error or 'see its sync log'}[/]",
            soft_wrap=True,
        )
    return 1 if failing else 0


def _when(at: dt.datetime | None) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "never"


def cmd_sandbox_serve(args: argparse.Namespace) -> int:
    from crmflow.sandbox.serve import run

    run(
        args.host,
        args.port,
        Path(args.state) if args.state else None,
        allow_http_webhooks=not args.https_webhooks_only,
    )
    return 0


# --------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmflow", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the web app and API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run on the embedded default with demo data")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", help="where the demo keeps its data (default .data)")
    p.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="database administration").add_subparsers(
        dest="db_command", required=True
    )
    p = db.add_parser(
        "upgrade", help="apply migrations (and grant the app role on PostgreSQL)"
    )
    p.set_defaults(func=cmd_db_upgrade)

    users = sub.add_parser("users", help="user administration").add_subparsers(
        dest="users_command", required=True
    )
    p = users.add_parser("create", help="create a user in an organization")
    p.add_argument("--email", required=True)
    p.add_argument("--name", help="display name")
    p.add_argument("--org", required=True, help="organization slug")
    p.add_argument("--org-name", help="display name when --create-org creates it")
    p.add_argument(
        "--create-org", action="store_true", help="create the organization if missing"
    )
    p.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    p.set_defaults(func=cmd_users_create)

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("generate", help="print a new key ring entry")
    p.add_argument("--id", help="key id (default: random)")
    p.set_defaults(func=cmd_keys_generate)
    p = keys.add_parser(
        "rotate", help="re-encrypt every stored secret with the newest key"
    )
    p.set_defaults(func=cmd_keys_rotate)

    sandbox = sub.add_parser(
        "sandbox", help="the local Google/Microsoft sandbox"
    ).add_subparsers(dest="sandbox_command", required=True)
    p = sandbox.add_parser(
        "serve", help="serve the sandbox on its own and print its base URLs"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--state", help="SQLite file to keep the sandbox's state in (default: memory)"
    )
    p.add_argument(
        "--https-webhooks-only",
        action="store_true",
        help="refuse http:// push and subscription addresses, as Google and Microsoft do",
    )
    p.set_defaults(func=cmd_sandbox_serve)

    sync = sub.add_parser("sync", help="run syncs now").add_subparsers(
        dest="sync_command", required=True
    )
    p = sync.add_parser(
        "calendar",
        help="sync a user's calendars now (exit 1 if a run failed or was partial)",
    )
    p.add_argument("--user", required=True, help="the user's e-mail address")
    p.add_argument("--org", help="organization slug (default: the user's first)")
    p.add_argument("--account", help="one calendar account id (default: all enabled)")
    p.add_argument(
        "--full", action="store_true", help="list everything instead of the changes"
    )
    p.add_argument(
        "--confirm-mass-delete",
        action="store_true",
        help="carry out deletions although one side suddenly lists nothing",
    )
    p.set_defaults(func=cmd_sync_calendar)
    p = sync.add_parser(
        "mail",
        help="fetch a user's new mail now (exit 1 if a mailbox failed)",
    )
    p.add_argument("--user", required=True, help="the user's e-mail address")
    p.add_argument("--org", help="organization slug (default: the user's first)")
    p.add_argument("--account", help="one mailbox id (default: all)")
    p.add_argument(
        "--full",
        action="store_true",
        help="list the import window again instead of the changes",
    )
    p.set_defaults(func=cmd_sync_mail)

    p = sub.add_parser(
        "worker",
        help="process scheduled syncs from the job queue (PostgreSQL; run any "
        "number of them)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="jobs this process runs at the same time (default 4)",
    )
    p.add_argument("--name", help="the worker's name in logs and the queue")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's Prometheus metrics on this port",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics port (default 127.0.0.1)",
    )
    p.add_argument(
        "--imap-idle",
        action="store_true",
        help="also hold IMAP IDLE connections (up to CRMFLOW_IMAP_IDLE_MAX) so new "
        "mail is synced at once; workers given it share the mailboxes",
    )
    p.set_defaults(func=cmd_worker)

    jobs = sub.add_parser("jobs", help="background work").add_subparsers(
        dest="jobs_command", required=True
    )
    p = jobs.add_parser(
        "status",
        help="every account's last and next scheduled sync (exit 1 if one keeps "
        "failing)",
    )
    p.set_defaults(func=cmd_jobs_status)

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True
    )
    p = config.add_parser(
        "show", help="print the effective configuration, secrets masked"
    )
    p.set_defaults(func=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CrmflowError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
