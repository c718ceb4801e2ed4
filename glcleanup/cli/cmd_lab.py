"""`glcleanup lab up|down|status|env|delete-image`: the local incident lab as background processes.

`lab up` prints `export ...` lines on stdout (progress on stderr), so
`eval "$(glcleanup lab up)"` points every other command at the lab.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from glcleanup import validate
from glcleanup.cli.options import plain_command
from glcleanup.cli.output import Output, emit_json, emit_table, info, wants_json
from glcleanup.lab.lab import DEFAULT_TIME_SCALE, DEFAULT_VERSION, Lab, default_dir

lab_app = typer.Typer(name="lab", help="The local incident lab: real registry + simulated GitLab on 127.0.0.1.",
                      no_args_is_help=True)

DirOption = Annotated[Path | None, typer.Option(
    "--dir", help="Lab directory (default $XDG_STATE_HOME/glcleanup/lab).", show_default=False)]


def _exports(env: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


@plain_command(lab_app, "up")
def up(
    directory: DirOption = None,
    version: Annotated[str, typer.Option("--version", help="GitLab version to simulate "
                                         "(16.6.1, 17.3.5 loop forever; 17.5.0 needs the flag; 17.6.0 caps).")]
    = DEFAULT_VERSION,
    time_scale: Annotated[float, typer.Option("--time-scale", min=0.001,
                                              help="Real seconds per GitLab minute (cron, backoff).")]
    = DEFAULT_TIME_SCALE,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from a new database and registry.")] = False,
    tls: Annotated[bool, typer.Option("--tls", help="Serve the registry over HTTPS (self-signed, "
                                      "trusted by the lab's GitLab).")] = False,
) -> None:
    """Start the lab in the background and print its settings as `export` lines."""

    def start() -> Lab:
        lab = Lab(directory or default_dir(), version=version, time_scale=time_scale, tls=tls)
        if fresh:
            lab.purge()
        info(f"lab: starting GitLab {version} simulation and registry in {lab.dir}")
        state = lab.up(daemon=True)
        info(f"lab: registry {state['registry_url']} (log {state['registry_log']})")
        info(f"lab: GitLab API {state['gitlab_url']}, runner {state['runner']}")
        info("lab: up. Point glcleanup at it with: eval \"$(glcleanup lab env)\"")
        return lab

    lab = start()
    sys.stdout.write(_exports(lab.settings_env()))


@plain_command(lab_app, "env")
def env(directory: DirOption = None) -> None:
    """Print the running lab's settings as `export` lines."""
    lab = Lab.load(directory)
    sys.stdout.write(_exports(lab.settings_env()))


@plain_command(lab_app, "down")
def down(
    directory: DirOption = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the lab's database, images and logs.")]
    = False,
) -> None:
    """Stop the lab's processes (idempotent)."""

    def stop() -> bool:
        lab = Lab(directory or default_dir())
        ran = lab.down()
        if purge:
            lab.purge()
        return ran

    ran = stop()
    info("lab: stopped" if ran else "lab: nothing was running")


@plain_command(lab_app, "status")
def status(
    directory: DirOption = None,
    output: Annotated[Output | None, typer.Option("-o", "--output", help="table or json.")] = None,
) -> int:
    """Show whether the lab runs, where, and its repositories by status (exit 1 when down)."""
    doc = Lab(directory or default_dir()).status()
    if wants_json(output):
        emit_json(doc)
    else:
        rows = [{"component": name, "running": doc[name]["running"], "pid": doc[name]["pid"],
                 "url": doc[name]["url"]} for name in ("gitlab", "registry")]
        emit_table(rows, ["component", "running", "pid", "url"],
                   title=f"lab {doc['state']}: GitLab {doc['version']} in {doc['dir']}")
        typer.echo(f"registry_api_url: {doc['registry']['api_url']}")
        typer.echo("")
        emit_table(doc["images"], ["id", "project", "path", "status"], title="container repositories:")
        typer.echo(f"worker passes: {doc['worker_passes']}, runner boots: {doc['runner_boots']}")
    return 0 if doc["state"] == "up" else 1


@plain_command(lab_app, "delete-image")
def delete_image(
    project: Annotated[str, typer.Argument(help="Project full path, e.g. acme/website.")],
    repo_id: Annotated[str, typer.Argument(help="Container repository id.")],
    directory: DirOption = None,
) -> None:
    """Delete a container repository the way the GitLab UI does (it becomes delete_scheduled)."""

    def act() -> int:
        path, rid = validate.project_path(project), validate.repository_id(repo_id)
        code = Lab.load(directory).delete_image(path, rid)
        info(f"lab: DELETE answered {code}; repository {rid} of {path} is now delete_scheduled")
        return code

    act()


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
