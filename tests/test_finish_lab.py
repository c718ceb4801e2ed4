"""stop-loop --mode finish against the lab: GitLab's ThirdParty::DeleteTagsService (the lab's Ruby imitation)
talking to the real Distribution 2.8.2 registry while the simulated worker keeps looping, per GitLab version.

One lab per version for the whole module; every test makes its own project, so they do not interfere.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.lab import schema, seed
from glcleanup.lab.lab import Lab
from glcleanup.lab.registry import free_port, list_tags, manifest_digest, push_image
from tests.lab_proxy import FailingPutProxy
from tests.support.net import wait_until
from tests.support.running_lab import boots, row

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.timeout(240),
]
pytest.importorskip("glcleanup.lab.api")

VERSIONS = ("17.3.5", "17.6.0")
DUMMY_CONFIG = b'{\n  "config": {\n  }\n}'  # JSON.pretty_generate({config: {}}) with the json gem < 2.8


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    made: dict[str, Lab] = {}
    root = tmp_path_factory.mktemp("finish-labs")
    try:
        for version in VERSIONS:
            # 17.6: half a second per GitLab minute, so the backoff (1, 2, 4... minutes) spaces the
            # worker's 450-DELETE passes as GitLab would, instead of ten of them in 25 s
            lab = Lab(root / version, version=version, time_scale=0.5 if version == "17.6.0" else 0.05)
            lab.up(daemon=False)
            made[version] = lab
        yield made
    finally:
        for lab in made.values():
            lab.down()


_counter = iter(range(1, 10_000))


def new_repository(lab: Lab, name: str = "") -> tuple[str, int, str]:
    """A fresh project under acme/ with one container repository: (project path, repository id, registry path)."""
    conn = schema.connect(lab.db_path)
    try:
        project = f"fin{next(_counter)}"
        pid = seed.create_project(conn, seed.ensure_group(conn, "acme"), project)
        rid = seed.create_repository(conn, pid, name)
        path = seed.repository_path(conn, rid)
        conn.commit()
    finally:
        conn.close()
    return f"acme/{project}", rid, path


def link_tags(lab: Lab, path: str, source_tag: str, tags: list[str]) -> None:
    """Tag the manifest of `source_tag` under more names the way Distribution's filesystem driver stores a
    tag (`_manifests/tags/<tag>/current/link` + `index/sha256/<hex>/link`), written straight into the lab
    registry's storage: 450 tags cost milliseconds instead of 450 PUTs on a loaded machine. The registry
    reads tags from disk on every request; tags/list and HEAD below prove it sees them."""
    digest = manifest_digest(lab.registry_url, path, source_tag)
    assert digest is not None
    storage = lab.dir / "registry" / "storage" / "docker" / "registry" / "v2"
    tags_dir = storage / "repositories" / path / "_manifests" / "tags"
    for tag in tags:
        for link in (tags_dir / tag / "current" / "link", tags_dir / tag / "index" / "sha256" / digest[7:] / "link"):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(digest)


def finish(lab: Lab, project: str, *extra: str, yes: bool = True) -> Result:
    args = ["stop-loop", "--project", project, "--mode", "finish", "-o", "json", *extra]
    return CliRunner().invoke(app, [*args, "--yes"] if yes else args, env=lab.settings_env())


def stuck(lab: Lab, project: str, rid: int) -> None:
    """The UI's delete: the worker starts looping on the row (DIGEST_INVALID against Distribution 2.8)."""
    lab.delete_image(project, rid)
    assert lab.worker is not None
    wait_until(lambda: lab.worker is not None and len(lab.worker.passes_for(rid)) >= 2, 20)


@pytest.mark.parametrize("version", VERSIONS)
def test_finish_deletes_only_the_repositorys_tags_and_removes_the_row(labs: dict[str, Lab], version: str) -> None:
    lab = labs[version]
    project, rid, path = new_repository(lab)
    _, _, other = new_repository(lab)
    shared = push_image(lab.registry_url, path, "v1", payload=b"shared layer")
    assert push_image(lab.registry_url, path, "v1-alias", payload=b"shared layer") == shared
    own = push_image(lab.registry_url, path, "v2", payload=b"only here")
    assert push_image(lab.registry_url, other, "keep", payload=b"shared layer") == shared  # same digest elsewhere
    stuck(lab, project, rid)

    plan = finish(lab, project, yes=False)
    assert plan.exit_code == 0, plan.output
    doc = json.loads(plan.stdout)
    assert doc["applied"] is False
    assert {(t["tag"], t["digest"]) for t in doc["plan"][0]["tags"]} == {("v1", shared), ("v1-alias", shared),
                                                                        ("v2", own)}
    assert "cannot be undone" in doc["registry_note"]
    assert sorted(list_tags(lab.registry_url, path)) == ["v1", "v1-alias", "v2"]
    assert row(lab, rid) is not None

    before = boots(lab)
    started = time.monotonic()
    result = finish(lab, project)
    assert result.exit_code == 0, result.output
    assert list_tags(lab.registry_url, path) == []
    assert row(lab, rid) is None
    elapsed = time.monotonic() - started
    print(f"\nGitLab {version}: `stop-loop --mode finish --yes` to empty tags/list and removed row: "
          f"{elapsed:.2f} s, {boots(lab) - before} runner boot(s)")
    assert boots(lab) - before == 1
    doc = json.loads(result.stdout)
    assert (doc["applied"], doc["verified"]) == (True, True), doc["registry"]
    assert doc["registry"][0]["deleted"] == 3
    assert doc["registry"][0]["row"] in ("removed", "already removed (GitLab's worker saw no tags and destroyed it)")
    assert "finish: repository" in result.stderr
    assert "3/3 tags deleted" in result.stderr

    # the other repository's tag with the same digest survives, pullable as before
    assert list_tags(lab.registry_url, other) == ["keep"]
    assert manifest_digest(lab.registry_url, other, "keep") == shared
    # GitLab's dummy image: the 21-byte config blob is in the repository, and the journal keeps tag -> digest
    blob = requests.get(f"{lab.registry_url}/v2/{path}/blobs/sha256:{hashlib.sha256(DUMMY_CONFIG).hexdigest()}",
                        timeout=10)
    assert blob.status_code == 200
    assert blob.content == DUMMY_CONFIG
    journal = json.loads(Path(doc["journal"]).read_text())
    assert journal["state"] == "applied"
    assert journal["mode"] == "finish"
    assert {t["tag"]: t["digest"] for t in journal["registry"]["tags"][str(rid)]}["v2"] == own
    assert [c["action"] for c in journal["changes"]] == ["destroy"]

    # undo puts the row back (registry data stays deleted); GitLab's worker then finds no tags and finishes
    undo = CliRunner().invoke(app, ["undo", doc["journal"], "--yes", "-o", "json"], env=lab.settings_env())
    assert undo.exit_code == 0, undo.output
    undone = json.loads(undo.stdout)
    assert undone["applied"] is True
    assert undone["exact"] is True
    assert any("registry" in w for w in undone["warnings"])
    wait_until(lambda: row(lab, rid) is None, 20)


def test_finish_450_tags_in_batches(labs: dict[str, Lab]) -> None:
    lab = labs["17.6.0"]  # the 17.3 worker would send 450 DELETEs a pass, several passes a second, meanwhile
    project, rid, path = new_repository(lab)
    push_image(lab.registry_url, path, "t000", payload=b"many")
    link_tags(lab, path, "t000", [f"t{i:03d}" for i in range(1, 450)])
    assert len(list_tags(lab.registry_url, path)) == 450
    assert manifest_digest(lab.registry_url, path, "t449") == manifest_digest(lab.registry_url, path, "t000")
    stuck(lab, project, rid)
    started = time.monotonic()
    result = finish(lab, project, "--batch-size", "100")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert list_tags(lab.registry_url, path) == []
    assert row(lab, rid) is None
    doc = json.loads(result.stdout)
    assert len(doc["plan"][0]["tags"]) == 450
    assert doc["registry"][0]["deleted"] == 450
    steps = [line for line in result.stderr.splitlines() if line.startswith("finish: repository")]
    assert [s.split(": ")[-1] for s in steps] == [f"{n}/450 tags deleted" for n in (100, 200, 300, 400, 450)]
    print(f"\n450 tags: {elapsed:.2f} s for plan (450 digests), 5 batches and the row")


def test_a_registry_failing_half_way_leaves_the_row_and_names_the_tags_left(labs: dict[str, Lab]) -> None:
    lab = labs["17.6.0"]
    project, rid, path = new_repository(lab)
    for tag in ("a", "b", "c", "d"):
        push_image(lab.registry_url, path, tag, payload=tag.encode())
    stuck(lab, project, rid)
    real = lab.registry_api_url()
    with FailingPutProxy(real, fail_at=3) as proxy:
        lab.set_registry_api_url(proxy.url)
        try:
            before = row(lab, rid)
            result = finish(lab, project, "--batch-size", "2")
        finally:
            lab.set_registry_api_url(real)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["applied"] is True
    assert doc["verified"] is False
    entry = doc["registry"][0]
    # batch 1 (a, b) went; in batch 2 c's PUT failed, d's went (GitLab's service skips a nil digest)
    assert entry["row"] == "untouched"
    assert entry["deleted"] == 3
    assert entry["left"] == ["c"]
    assert list_tags(lab.registry_url, path) == ["c"]
    assert any("tags left in the registry: c" in w for w in doc["warnings"])
    now = row(lab, rid)
    assert now is not None
    assert before is not None
    assert now["status"] in (0, 2)
    # what went over the wire is GitLab's: headers, the 21-byte config blob, the manifest without `layers`
    ours = [(m, p, h, b) for m, p, h, b in proxy.seen if f"/v2/{path}/" in p and m in ("POST", "PUT", "HEAD")]
    assert ours
    for _, _, headers, _ in ours:
        assert headers["User-Agent"] == "GitLab/17.6.0"
        assert headers["Accept"] == ("application/vnd.docker.distribution.manifest.v2+json, "
                                     "application/vnd.oci.image.manifest.v1+json")
        assert headers["Authorization"].startswith("Bearer ey")
    blob_puts = [(h, b) for m, p, h, b in ours if m == "PUT" and "/blobs/uploads/" in p]
    assert {b for _, b in blob_puts} == {DUMMY_CONFIG}
    assert {h["Content-Type"] for h, _ in blob_puts} == {"application/octet-stream"}
    config_digest = "sha256:" + hashlib.sha256(DUMMY_CONFIG).hexdigest()
    manifest = ('{\n  "schemaVersion": 2,\n  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
                '  "config": {\n    "mediaType": "application/vnd.docker.container.image.v1+json",\n'
                f'    "size": 21,\n    "digest": "{config_digest}"\n  }}\n}}').encode()
    manifest_puts = [(p, h, b) for m, p, h, b in ours if m == "PUT" and "/manifests/" in p]
    assert [p.rsplit("/", 1)[1] for p, _, _ in manifest_puts] == ["a", "b", "c", "d"]
    assert {b for _, _, b in manifest_puts} == {manifest}
    assert {h["Content-Type"] for _, h, _ in manifest_puts} == {"application/vnd.docker.distribution.manifest.v2+json"}
    journal = json.loads(Path(doc["journal"]).read_text())
    assert journal["changes"] == []
    assert journal["registry_result"][0]["left"] == ["c"]
    assert len(journal["registry"]["tags"][str(rid)]) == 4


def test_gitlab_without_registry_access_or_key_changes_nothing(labs: dict[str, Lab]) -> None:
    lab = labs["17.3.5"]
    project, rid, path = new_repository(lab)
    push_image(lab.registry_url, path, "latest")
    stuck(lab, project, rid)
    real = lab.registry_api_url()
    lab.set_registry_api_url(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        result = finish(lab, project)
    finally:
        lab.set_registry_api_url(real)
    assert result.exit_code == 3, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "cannot reach its registry" in lines[0]
    assert list_tags(lab.registry_url, path) == ["latest"]
    assert row(lab, rid) is not None

    conn = schema.connect(lab.db_path)
    key = schema.setting(conn, "registry_key_path") or ""
    schema.set_setting(conn, "registry_key_path", key + ".missing")
    conn.close()
    try:
        result = finish(lab, project)
    finally:
        conn = schema.connect(lab.db_path)
        schema.set_setting(conn, "registry_key_path", key)
        conn.close()
    assert result.exit_code == 3, result.output
    assert "registry signing key" in result.stderr
    assert list_tags(lab.registry_url, path) == ["latest"]
    assert row(lab, rid) is not None
    journals = Path.home() / ".local" / "state" / "glcleanup" / "journal"
    assert not journals.exists() or not list(journals.iterdir())


@pytest.mark.parametrize("args", [["--project", "../etc"], ["--project", "acme/x", "--batch-size", "0"],
                                  ["--project", "acme/x", "--disable-cleanup-policy"],
                                  ["--project", "acme/x; rm -rf /"]])
def test_hostile_or_bad_input_is_refused_before_anything_runs(labs: dict[str, Lab], args: list[str]) -> None:
    lab = labs["17.3.5"]
    before = boots(lab)
    result = CliRunner().invoke(app, ["stop-loop", "--mode", "finish", *args, "--yes"], env=lab.settings_env())
    assert result.exit_code == 2, result.output
    assert boots(lab) == before
