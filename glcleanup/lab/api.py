"""The lab's GitLab REST API (`/api/v4`) and a small GraphQL endpoint, served from the lab's SQLite DB.

Faithful where glcleanup depends on it (lib/api/*.rb, lib/api/entities/container_registry.rb):
`PRIVATE-TOKEN` auth, offset pagination with `Link` and `x-*` headers (python-gitlab follows only
`Link`), `status` on repositories only from 16.7 (MR !138202), `tags`/`tags_count` only when
asked (they make GitLab call the registry live, so they do here too), group listings that include
subgroups but skip projects whose registry is disabled, 429 with `Retry-After` when asked to
rate-limit, and a per-request latency so benchmarks see what a real instance costs.

GraphQL covers the fields glcleanup queries (Query.project/group/projects/metadata, Project and
Group `containerRepositories` and `containerRepositoriesCount`, ContainerRepository with `status`),
validates the whole document first and prices it with GitLab's complexity rules
(app/graphql/types/base_field.rb), answering errors the way graphql-ruby does.
"""

from __future__ import annotations

import base64
import json
import math
import queue
import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from glcleanup.lab import schema

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
COUNT_LIMIT = 10_000  # GitLab drops x-total/x-total-pages above this (OffsetPagination)
MAX_OFFSET = 50_000  # offset pagination of projects stops here; keyset goes on
ADMIN_MAX_COMPLEXITY = 300  # GitlabSchema::ADMIN_MAX_COMPLEXITY
GRAPHQL_MAX_PAGE_SIZE = 100
ACCESS_LEVELS = {0: "disabled", 10: "private", 20: "enabled", 30: "public"}
VISIBILITY = {0: "private", 10: "internal", 20: "public"}
# GraphQL fields with the GitLab version that introduced them (MR !44926, !48685).
GRAPHQL_SINCE = {
    ("Project", "containerRepositories"): (13, 6, 0),
    ("Group", "containerRepositories"): (13, 6, 0),
    ("Project", "containerRepositoriesCount"): (13, 7, 0),
    ("Group", "containerRepositoriesCount"): (13, 7, 0),
}
GRAPHQL_FAILURES = ("error", "missing-field", "http-500")


class ApiError(Exception):
    """An HTTP error answer: status code and GitLab's `{"message": ...}` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- formatting


_DB_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def rest_time(value: str | None) -> str | None:
    """GitLab's REST timestamps: ISO 8601, milliseconds, `Z` (string fast path: listings are hot)."""
    if value and _DB_TIME.fullmatch(value):
        return f"{value[:10]}T{value[11:23]}Z"
    moment = schema.parse_ts(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z" if moment else None


def gql_time(value: str | None) -> str | None:
    """graphql-ruby's ISO8601DateTime: seconds, `Z`."""
    moment = schema.parse_ts(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- the data layer

PROJECT_SQL = """
SELECT p.id, p.name, p.path, p.namespace_id, p.created_at, p.updated_at, p.archived, p.visibility_level,
       p.container_registry_access_level AS registry_level, r.path AS full_path,
       n.name AS ns_name, n.path AS ns_path, n.type AS ns_type, n.parent_id AS ns_parent, nr.path AS ns_full_path
FROM projects p
JOIN routes r ON r.source_type = 'Project' AND r.source_id = p.id
JOIN namespaces n ON n.id = p.namespace_id
JOIN routes nr ON nr.source_type = 'Namespace' AND nr.source_id = n.id
"""
GROUP_SQL = """
SELECT n.id, n.name, n.path, n.parent_id, n.created_at, r.path AS full_path
FROM namespaces n JOIN routes r ON r.source_type = 'Namespace' AND r.source_id = n.id
WHERE n.type = 'Group'
"""
REPO_SQL = """
SELECT c.*, r.path AS project_path, p.container_registry_access_level AS registry_level
FROM container_repositories c
JOIN projects p ON p.id = c.project_id
JOIN routes r ON r.source_type = 'Project' AND r.source_id = c.project_id
"""
TREE_CTE = """
WITH RECURSIVE tree(id) AS (
  SELECT CAST(? AS integer)
  UNION ALL SELECT n.id FROM namespaces n JOIN tree ON n.parent_id = tree.id WHERE n.type = 'Group'
)
"""


class Store:
    """SQL over the lab DB; one connection per request from a small pool (sqlite3 is not thread-safe)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = str(db_path)
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []

    @contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = schema.connect(self.db_path)
            self._all.append(conn)
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()


def one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
    """First row or None (typed: sqlite3 returns Any)."""
    row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    return row


def find_project(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    """`:id` is a numeric id or a URL-encoded full path (case-insensitive, like routes)."""
    if ref.isdigit():
        row = one(conn, PROJECT_SQL + " WHERE p.id = ?", (int(ref),))
    else:
        row = one(conn, PROJECT_SQL + " WHERE LOWER(r.path) = LOWER(?)", (ref,))
    if row is None:
        raise ApiError(404, "404 Project Not Found")
    return row


def find_group(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    if ref.isdigit():
        row = one(conn, GROUP_SQL + " AND n.id = ?", (int(ref),))
    else:
        row = one(conn, GROUP_SQL + " AND LOWER(r.path) = LOWER(?)", (ref,))
    if row is None:
        raise ApiError(404, "404 Group Not Found")
    return row


def group_repositories_sql() -> str:
    """ContainerRepository.for_group_and_its_subgroups: registry-enabled projects only."""
    return (TREE_CTE + REPO_SQL  # noqa: S608 - constants only; values go in as parameters
            + " WHERE p.namespace_id IN (SELECT id FROM tree) AND p.container_registry_access_level > 0")


def repository_path(row: sqlite3.Row) -> str:
    """ContainerRepository#path: project full path plus `/name`, downcased."""
    return "/".join(p for p in (row["project_path"], row["name"]) if p).lower()


def status_name(row: sqlite3.Row) -> str | None:
    return schema.STATUS_NAME.get(row["status"]) if row["status"] is not None else None


# --------------------------------------------------------------------------- pagination


@dataclass
class Page:
    page: int
    per_page: int
    total: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def total_pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def page_params(query: dict[str, str]) -> tuple[int, int]:
    """GitLab's `use :pagination`: page >= 1, per_page defaults to 20 and is capped at 100."""
    try:
        page = max(1, int(query.get("page", "1")))
    except ValueError:
        page = 1
    try:
        per_page = int(query.get("per_page", str(DEFAULT_PER_PAGE)))
    except ValueError:
        per_page = DEFAULT_PER_PAGE
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    return page, per_page


def pagination_headers(page: Page, base: str, query: dict[str, str],
                       count_limit: int = COUNT_LIMIT) -> dict[str, str]:
    """Link (prev, next, first, last) plus x-* headers, as Gitlab::Pagination::OffsetPagination sends."""
    def link(number: int) -> str:
        params = {**query, "page": str(number), "per_page": str(page.per_page)}
        return f"{base}?{urllib.parse.urlencode(params)}"

    counted = page.total <= count_limit
    has_next = page.offset + page.per_page < page.total
    links = []
    if page.page > 1:
        links.append(f'<{link(page.page - 1)}>; rel="prev"')
    if has_next:
        links.append(f'<{link(page.page + 1)}>; rel="next"')
    links.append(f'<{link(1)}>; rel="first"')
    if counted:
        links.append(f'<{link(page.total_pages)}>; rel="last"')
    headers = {
        "Link": ", ".join(links),
        "X-Page": str(page.page),
        "X-Per-Page": str(page.per_page),
        "X-Next-Page": str(page.page + 1) if has_next else "",
        "X-Prev-Page": str(page.page - 1) if page.page > 1 else "",
    }
    if counted:
        headers["X-Total"] = str(page.total)
        headers["X-Total-Pages"] = str(page.total_pages)
    return headers


# --------------------------------------------------------------------------- REST entities


class Entities:
    """Row → JSON, per GitLab version and request options."""

    def __init__(self, version: str, base_url: str, registry_host: str,
                 tags_of: Callable[[str], list[str]]) -> None:
        self.version = version
        self.base_url = base_url
        self.registry_host = registry_host
        self.tags_of = tags_of

    def namespace(self, row: sqlite3.Row) -> dict[str, Any]:
        kind = "user" if row["ns_type"] == "User" else "group"
        return {"id": row["namespace_id"], "name": row["ns_name"], "path": row["ns_path"], "kind": kind,
                "full_path": row["ns_full_path"], "parent_id": row["ns_parent"], "avatar_url": None,
                "web_url": f"{self.base_url}/{'groups/' if kind == 'group' else ''}{row['ns_full_path']}"}

    def project(self, row: sqlite3.Row, simple: bool = False,
                policy: sqlite3.Row | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": row["id"], "description": None, "name": row["name"],
            "name_with_namespace": f"{row['ns_name']} / {row['name']}", "path": row["path"],
            "path_with_namespace": row["full_path"], "created_at": rest_time(row["created_at"]),
            "default_branch": "main", "tag_list": [], "topics": [],
            "web_url": f"{self.base_url}/{row['full_path']}", "namespace": self.namespace(row),
        }
        if simple:
            return out
        level = ACCESS_LEVELS.get(row["registry_level"], "enabled")
        out.update({
            "archived": bool(row["archived"]), "visibility": VISIBILITY.get(row["visibility_level"], "private"),
            "container_registry_enabled": level != "disabled", "container_registry_access_level": level,
            "container_registry_image_prefix": f"{self.registry_host}/{row['full_path'].lower()}",
            "last_activity_at": rest_time(row["updated_at"]),
        })
        out["container_expiration_policy"] = self.policy(policy)
        return out

    @staticmethod
    def policy(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {"cadence": row["cadence"], "enabled": bool(row["enabled"]), "keep_n": row["keep_n"],
                "older_than": row["older_than"], "name_regex": row["name_regex"],
                "name_regex_keep": row["name_regex_keep"], "next_run_at": rest_time(row["next_run_at"])}

    def group(self, row: sqlite3.Row) -> dict[str, Any]:
        return {"id": row["id"], "web_url": f"{self.base_url}/groups/{row['full_path']}", "name": row["name"],
                "path": row["path"], "description": "", "visibility": "private", "full_name": row["name"],
                "full_path": row["full_path"], "parent_id": row["parent_id"],
                "created_at": rest_time(row["created_at"])}

    def repository(self, row: sqlite3.Row, *, tags: bool = False, tags_count: bool = False,
                   admin: bool = True) -> dict[str, Any]:
        path = repository_path(row)
        out: dict[str, Any] = {
            "id": row["id"], "name": row["name"], "path": path, "project_id": row["project_id"],
            "location": f"{self.registry_host}/{path}", "created_at": rest_time(row["created_at"]),
            "cleanup_policy_started_at": rest_time(row["expiration_policy_started_at"]),
        }
        if tags or tags_count:
            names = self.tags_of(path)  # GitLab asks the registry live here
            if tags_count:
                out["tags_count"] = len(names)
            if tags:
                out["tags"] = [{"name": t, "path": f"{path}:{t}", "location": f"{self.registry_host}/{path}:{t}"}
                               for t in names]
        if admin:
            out["delete_api_path"] = (f"{self.base_url}/api/v4/projects/{row['project_id']}"
                                      f"/registry/repositories/{row['id']}")
        if schema.has_rest_status(self.version):
            out["status"] = status_name(row)
        return out


# --------------------------------------------------------------------------- GraphQL: parsing

_TOKEN = re.compile(r"""
    (?P<ws>[\s,\ufeff]+|\#[^\n]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$():=@\[\]{}|&])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
""", re.VERBOSE)


class GraphQLError(Exception):
    """Answered as `{"errors": [{"message": ...}]}`, HTTP 200, like graphql-ruby."""

    def __init__(self, message: str, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


@dataclass
class Var:
    name: str


@dataclass
class Enum:
    name: str


@dataclass
class FieldNode:
    name: str
    alias: str | None
    args: dict[str, Any]
    selections: list[FieldNode] | None

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    kind: str
    variables: dict[str, Any]  # name -> default value (or None)
    selections: list[FieldNode]


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise GraphQLError(f'Parse error on "{text[pos]}" at [{text.count(chr(10), 0, pos) + 1}, 1]')
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group()))
    return tokens


class Parser:
    """Recursive descent over the executable subset glcleanup needs (no fragments, no directives)."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok_kind, tok_value = self.peek()
        if (value is not None and tok_value != value) or (kind is not None and tok_kind != kind) or tok_kind == "eof":
            shown = tok_value or "end of query"
            raise GraphQLError(f'Parse error on "{shown}" ({tok_kind.upper()})')
        self.pos += 1
        return tok_value

    def document(self) -> Operation:
        kind, value = self.peek()
        if value == "{":
            op = Operation("query", {}, self.selection_set())
        elif kind == "name" and value in ("query", "mutation", "subscription"):
            self.take()
            if self.peek()[0] == "name":
                self.take()
            variables = self.variable_definitions() if self.peek()[1] == "(" else {}
            op = Operation(value, variables, self.selection_set())
        else:
            raise GraphQLError(f'Parse error on "{value}" ({kind.upper()})')
        if self.peek()[0] != "eof":
            raise GraphQLError("This anonymous operation must be the only defined operation.")
        return op

    def variable_definitions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.take("(")
        while self.peek()[1] != ")":
            self.take("$")
            name = self.take(kind="name")
            self.take(":")
            self.type_ref()
            out[name] = self.value() if self.peek()[1] == "=" and self.take("=") else None
        self.take(")")
        return out

    def type_ref(self) -> None:
        if self.peek()[1] == "[":
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take(kind="name")
        if self.peek()[1] == "!":
            self.take("!")

    def selection_set(self) -> list[FieldNode]:
        self.take("{")
        fields = []
        while self.peek()[1] != "}":
            if self.peek()[0] == "spread":
                raise GraphQLError("Fragments are not supported by the lab's GraphQL endpoint")
            fields.append(self.field())
        self.take("}")
        if not fields:
            raise GraphQLError('Parse error on "}" (RCURLY)')
        return fields

    def field(self) -> FieldNode:
        name = self.take(kind="name")
        alias = None
        if self.peek()[1] == ":":
            self.take(":")
            alias, name = name, self.take(kind="name")
        args: dict[str, Any] = {}
        if self.peek()[1] == "(":
            self.take("(")
            while self.peek()[1] != ")":
                arg = self.take(kind="name")
                self.take(":")
                args[arg] = self.value()
            self.take(")")
        if self.peek()[1] == "@":
            raise GraphQLError("Directives are not supported by the lab's GraphQL endpoint")
        selections = self.selection_set() if self.peek()[1] == "{" else None
        return FieldNode(name, alias, args, selections)

    def value(self) -> Any:
        kind, value = self.peek()
        if value == "$":
            self.take()
            return Var(self.take(kind="name"))
        if value == "[":
            self.take()
            items = []
            while self.peek()[1] != "]":
                items.append(self.value())
            self.take("]")
            return items
        if value == "{":
            self.take()
            obj = {}
            while self.peek()[1] != "}":
                key = self.take(kind="name")
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        self.take()
        if kind == "string":
            return json.loads(value)
        if kind == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(value, Enum(value))
        raise GraphQLError(f'Parse error on "{value}" ({kind.upper()})')


# --------------------------------------------------------------------------- GraphQL: schema


@dataclass(frozen=True)
class GqlField:
    """A field: its type (`Project`, `[X]`, `Connection:X`, or a scalar), its arguments, its resolver."""

    type: str
    args: tuple[str, ...] = ()
    resolver: bool = False  # priced like a Resolvers::BaseResolver field (complexity proc)


SCALARS = {"ID", "String", "Int", "Boolean", "Time", "Enum"}
SCHEMA: dict[str, dict[str, GqlField]] = {
    "Query": {
        "project": GqlField("Project", ("fullPath",), True),
        "group": GqlField("Group", ("fullPath",), True),
        "projects": GqlField("Connection:Project", ("ids", "first", "after", "sort", "search", "membership"), True),
        "containerRepository": GqlField("ContainerRepository", ("id",), True),
        "metadata": GqlField("Metadata"),
        "currentUser": GqlField("UserCore"),
    },
    "Metadata": {"version": GqlField("String"), "revision": GqlField("String")},
    "UserCore": {"id": GqlField("ID"), "username": GqlField("String")},
    "Namespace": {"id": GqlField("ID"), "fullPath": GqlField("ID"), "path": GqlField("String"),
                  "name": GqlField("String")},
    "Project": {
        "id": GqlField("ID"), "name": GqlField("String"), "path": GqlField("String"),
        "fullPath": GqlField("ID"), "nameWithNamespace": GqlField("String"), "archived": GqlField("Boolean"),
        "group": GqlField("Group"), "namespace": GqlField("Namespace"),
        "containerRepositoriesCount": GqlField("Int"),
        "containerRepositories": GqlField("Connection:ContainerRepository", ("first", "after", "name", "sort"),
                                          True),
        "containerExpirationPolicy": GqlField("ContainerExpirationPolicy"),
    },
    "Group": {
        "id": GqlField("ID"), "name": GqlField("String"), "path": GqlField("String"),
        "fullPath": GqlField("ID"), "containerRepositoriesCount": GqlField("Int"),
        "containerRepositories": GqlField("Connection:ContainerRepository", ("first", "after", "name", "sort"),
                                          True),
    },
    "ContainerRepository": {
        "id": GqlField("ID"), "name": GqlField("String"), "path": GqlField("String"),
        "location": GqlField("String"), "status": GqlField("Enum"), "createdAt": GqlField("Time"),
        "updatedAt": GqlField("Time"), "expirationPolicyStartedAt": GqlField("Time"),
        "expirationPolicyCleanupStatus": GqlField("Enum"), "migrationState": GqlField("String"),
        "tagsCount": GqlField("Int"), "project": GqlField("Project"),
    },
    "ContainerExpirationPolicy": {"enabled": GqlField("Boolean"), "cadence": GqlField("Enum"),
                                  "keepN": GqlField("Enum"), "olderThan": GqlField("Enum"),
                                  "nameRegex": GqlField("String")},
    "PageInfo": {"hasNextPage": GqlField("Boolean"), "hasPreviousPage": GqlField("Boolean"),
                 "startCursor": GqlField("String"), "endCursor": GqlField("String")},
}


def connection_fields(node: str) -> dict[str, GqlField]:
    return {"nodes": GqlField(f"[{node}]"), "edges": GqlField(f"[Edge:{node}]"), "pageInfo": GqlField("PageInfo")}


def fields_of(type_name: str) -> dict[str, GqlField]:
    if type_name.startswith("Connection:"):
        return connection_fields(type_name.split(":", 1)[1])
    if type_name.startswith("Edge:"):
        return {"cursor": GqlField("String"), "node": GqlField(type_name.split(":", 1)[1])}
    return SCHEMA[type_name]


def display_type(type_name: str) -> str:
    if ":" in type_name:
        kind, node = type_name.split(":", 1)
        return f"{node}{kind}"
    return type_name


def encode_cursor(row_id: int) -> str:
    return base64.b64encode(json.dumps({"id": str(row_id)}, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(json.loads(base64.b64decode(cursor))["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphQLError("Please provide a valid cursor") from exc


def gid(kind: str, value: int) -> str:
    return f"gid://gitlab/{kind}/{value}"


def parse_gid(value: Any, kind: str) -> int:
    match = re.fullmatch(rf"gid://gitlab/{kind}/(\d+)", str(value))
    if match is None:
        raise GraphQLError(f"{value!r} is not a valid Global ID")
    return int(match.group(1))


class GraphQL:
    """Validate, price and execute one request against the lab DB."""

    def __init__(self, conn: sqlite3.Connection, entities: Entities, version: str,
                 missing: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.conn = conn
        self.entities = entities
        self.version = version
        self.missing = missing

    def execute(self, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
        op = Parser(query).document()
        if op.kind != "query":
            raise GraphQLError(f"The lab's GraphQL endpoint does not serve {op.kind}s")
        values = {k: v for k, v in op.variables.items() if v is not None} | dict(variables or {})
        complexity = sum(self.validate("Query", f, values) for f in op.selections)
        if complexity > ADMIN_MAX_COMPLEXITY:
            raise GraphQLError(f"Query has complexity of {complexity}, which exceeds max complexity of "
                               f"{ADMIN_MAX_COMPLEXITY}")
        return {"data": self.select("Query", None, op.selections, values)}

    def has_field(self, type_name: str, name: str) -> bool:
        if (type_name, name) in self.missing:
            return False
        since = GRAPHQL_SINCE.get((type_name, name))
        return since is None or schema.version_tuple(self.version) >= since

    def validate(self, type_name: str, node: FieldNode, values: dict[str, Any]) -> int:
        """Check the field exists and takes these arguments; return its complexity (base_field.rb)."""
        if node.name == "__typename":
            return 0
        spec = fields_of(type_name).get(node.name)
        if spec is None or not self.has_field(type_name, node.name):
            raise GraphQLError(f"Field '{node.name}' doesn't exist on type '{display_type(type_name)}'",
                               {"code": "undefinedField", "typeName": display_type(type_name),
                                "fieldName": node.name})
        for arg in node.args:
            if arg not in spec.args:
                raise GraphQLError(f"Field '{node.name}' doesn't accept argument '{arg}'",
                                   {"code": "argumentNotAccepted", "name": node.name, "argumentName": arg})
        inner = spec.type.strip("[]")
        if inner in SCALARS:
            if node.selections:
                raise GraphQLError(f"Selections can't be made on scalars (field '{node.name}' returns "
                                   f"{inner} but has selections [...])")
            return 1
        if not node.selections:
            raise GraphQLError(f"Field must have selections (field '{node.name}' returns "
                               f"{display_type(inner)} but has no selections. Did you mean "
                               f"'{node.name} {{ ... }}'?)")
        child = sum(self.validate(inner, sel, values) for sel in node.selections)
        if not spec.resolver:
            return 1 + child
        complexity = float(child + 1)
        if spec.type.startswith("Connection:"):
            first = self.arg(node, "first", values)
            limit = min(int(first) if first is not None else GRAPHQL_MAX_PAGE_SIZE, GRAPHQL_MAX_PAGE_SIZE)
            complexity += complexity * limit * 0.01
        return int(complexity)

    @staticmethod
    def arg(node: FieldNode, name: str, values: dict[str, Any]) -> Any:
        value = node.args.get(name)
        return resolve_vars(value, values)

    def select(self, type_name: str, obj: Any, selections: list[FieldNode], values: dict[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for node in selections:
            if node.name == "__typename":
                out[node.key] = display_type(type_name)
                continue
            spec = fields_of(type_name)[node.name]
            args = {k: resolve_vars(v, values) for k, v in node.args.items()}
            value = self.resolve(type_name, node.name, obj, args)
            out[node.key] = self.shape(spec.type, value, node, values)
        return out

    def shape(self, type_name: str, value: Any, node: FieldNode, values: dict[str, Any]) -> Any:
        if value is None or node.selections is None:
            return value
        if type_name.startswith("["):
            return [self.select(type_name[1:-1], item, node.selections, values) for item in value]
        return self.select(type_name, value, node.selections, values)

    # ---- resolvers: objects are sqlite rows or small dicts

    def resolve(self, type_name: str, name: str, obj: Any, args: dict[str, Any]) -> Any:
        method = getattr(self, f"r_{type_name.split(':')[0]}_{name}", None)
        if method is not None:
            return method(obj, args)
        return obj[name] if isinstance(obj, dict) else None

    def r_Query_metadata(self, _obj: Any, _args: dict[str, Any]) -> dict[str, Any]:
        return {"version": self.version, "revision": "0000000lab"}

    def r_Query_currentUser(self, _obj: Any, _args: dict[str, Any]) -> dict[str, Any]:
        return {"id": gid("User", 1), "username": "root"}

    def r_Query_project(self, _obj: Any, args: dict[str, Any]) -> sqlite3.Row | None:
        return one(self.conn, PROJECT_SQL + " WHERE LOWER(r.path) = LOWER(?)",
                                 (str(args.get("fullPath")),))

    def r_Query_group(self, _obj: Any, args: dict[str, Any]) -> sqlite3.Row | None:
        return one(self.conn, GROUP_SQL + " AND LOWER(r.path) = LOWER(?)",
                                 (str(args.get("fullPath")),))

    def r_Query_containerRepository(self, _obj: Any, args: dict[str, Any]) -> sqlite3.Row | None:
        rid = parse_gid(args.get("id"), "ContainerRepository")
        return one(self.conn, REPO_SQL + " WHERE c.id = ?", (rid,))

    def r_Query_projects(self, _obj: Any, args: dict[str, Any]) -> dict[str, Any]:
        where: list[str] = []
        params: list[Any] = []
        if args.get("ids") is not None:
            ids = [parse_gid(v, "Project") for v in args["ids"]]
            where.append(f"q.id IN ({','.join('?' * len(ids))})" if ids else "1 = 0")
            params.extend(ids)
        if args.get("search"):
            where.append("LOWER(q.full_path) LIKE LOWER(?)")
            params.append(f"%{args['search']}%")
        sort = args.get("sort")
        descending = str(sort.name if isinstance(sort, Enum) else sort or "id_desc").lower().endswith("desc")
        return self.connection(PROJECT_SQL, (), where, params, args, descending)

    def connection(self, sql: str, sql_params: tuple[Any, ...], where: list[str], params: list[Any],
                   args: dict[str, Any], descending: bool = False) -> dict[str, Any]:
        """Keyset connection on `id`: `first` capped at 100 (silently, like graphql-ruby), `after` a cursor."""
        first = min(int(args.get("first") or GRAPHQL_MAX_PAGE_SIZE), GRAPHQL_MAX_PAGE_SIZE)
        after = decode_cursor(args.get("after"))
        clauses, values = list(where), list(params)
        if after is not None:
            clauses.append(f"q.id {'<' if descending else '>'} ?")
            values.append(after)
        text = f"SELECT * FROM ({sql}) q" + (" WHERE " + " AND ".join(clauses) if clauses else "")  # noqa: S608
        text += f" ORDER BY q.id {'DESC' if descending else 'ASC'} LIMIT ?"
        rows = self.conn.execute(text, (*sql_params, *values, first + 1)).fetchall()
        page = rows[:first]
        return {"nodes": page, "edges": [{"cursor": encode_cursor(r["id"]), "node": r} for r in page],
                "pageInfo": {"hasNextPage": len(rows) > first, "hasPreviousPage": after is not None,
                             "startCursor": encode_cursor(page[0]["id"]) if page else None,
                             "endCursor": encode_cursor(page[-1]["id"]) if page else None}}

    def r_Project_id(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return gid("Project", obj["id"])

    def r_Project_fullPath(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["full_path"])

    def r_Project_nameWithNamespace(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return f"{obj['ns_name']} / {obj['name']}"

    def r_Project_archived(self, obj: sqlite3.Row, _args: dict[str, Any]) -> bool:
        return bool(obj["archived"])

    def r_Project_name(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["name"])

    def r_Project_path(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["path"])

    def r_Project_group(self, obj: sqlite3.Row, _args: dict[str, Any]) -> sqlite3.Row | None:
        if obj["ns_type"] != "Group":
            return None
        return one(self.conn, GROUP_SQL + " AND n.id = ?", (obj["namespace_id"],))

    def r_Project_namespace(self, obj: sqlite3.Row, _args: dict[str, Any]) -> dict[str, Any]:
        return {"id": gid("Namespaces::UserNamespace" if obj["ns_type"] == "User" else "Group", obj["namespace_id"]),
                "fullPath": obj["ns_full_path"], "path": obj["ns_path"], "name": obj["ns_name"]}

    def r_Project_containerRepositoriesCount(self, obj: sqlite3.Row, _args: dict[str, Any]) -> int:
        row = self.conn.execute("SELECT COUNT(*) AS n FROM container_repositories WHERE project_id = ?",
                                (obj["id"],)).fetchone()
        return int(row["n"])

    def r_Project_containerRepositories(self, obj: sqlite3.Row, args: dict[str, Any]) -> dict[str, Any]:
        if obj["registry_level"] == 0:  # read_container_image is prevented: nothing is visible
            return self.connection(REPO_SQL, (), ["0"], [], args)
        return self.connection(REPO_SQL, (), *self.name_filter(["q.project_id = ?"], [obj["id"]], args), args)

    @staticmethod
    def name_filter(where: list[str], params: list[Any], args: dict[str, Any]) -> tuple[list[str], list[Any]]:
        if args.get("name"):
            return [*where, "LOWER(q.name) LIKE LOWER(?)"], [*params, f"%{args['name']}%"]
        return where, params

    def r_Project_containerExpirationPolicy(self, obj: sqlite3.Row, _args: dict[str, Any]) -> Any:
        row = self.conn.execute("SELECT * FROM container_expiration_policies WHERE project_id = ?",
                                (obj["id"],)).fetchone()
        if row is None:
            return None
        return {"enabled": bool(row["enabled"]), "cadence": row["cadence"], "keepN": row["keep_n"],
                "olderThan": row["older_than"], "nameRegex": row["name_regex"]}

    def r_Group_id(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return gid("Group", obj["id"])

    def r_Group_fullPath(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["full_path"])

    def r_Group_name(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["name"])

    def r_Group_path(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["path"])

    def r_Group_containerRepositoriesCount(self, obj: sqlite3.Row, _args: dict[str, Any]) -> int:
        sql = "SELECT COUNT(*) AS n FROM (" + group_repositories_sql() + ") counted"  # noqa: S608
        return int(self.conn.execute(sql, (obj["id"],)).fetchone()["n"])

    def r_Group_containerRepositories(self, obj: sqlite3.Row, args: dict[str, Any]) -> dict[str, Any]:
        return self.connection(group_repositories_sql(), (obj["id"],), *self.name_filter([], [], args), args)

    def r_ContainerRepository_id(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return gid("ContainerRepository", obj["id"])

    def r_ContainerRepository_name(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return str(obj["name"])

    def r_ContainerRepository_path(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return repository_path(obj)

    def r_ContainerRepository_location(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return f"{self.entities.registry_host}/{repository_path(obj)}"

    def r_ContainerRepository_status(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str | None:
        name = status_name(obj)
        return name.upper() if name else None

    def r_ContainerRepository_createdAt(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str | None:
        return gql_time(obj["created_at"])

    def r_ContainerRepository_updatedAt(self, obj: sqlite3.Row, _args: dict[str, Any]) -> str | None:
        return gql_time(obj["updated_at"])

    def r_ContainerRepository_expirationPolicyStartedAt(self, obj: sqlite3.Row, _args: dict[str, Any]) -> Any:
        return gql_time(obj["expiration_policy_started_at"])

    def r_ContainerRepository_expirationPolicyCleanupStatus(self, obj: sqlite3.Row, _args: dict[str, Any]) -> Any:
        names = {v: k for k, v in schema.CLEANUP_STATUS.items()}
        return names.get(obj["expiration_policy_cleanup_status"], "cleanup_unscheduled").upper()

    def r_ContainerRepository_migrationState(self, _obj: sqlite3.Row, _args: dict[str, Any]) -> str:
        return ""

    def r_ContainerRepository_tagsCount(self, obj: sqlite3.Row, _args: dict[str, Any]) -> int:
        return len(self.entities.tags_of(repository_path(obj)))

    def r_ContainerRepository_project(self, obj: sqlite3.Row, _args: dict[str, Any]) -> sqlite3.Row:
        return find_project(self.conn, str(obj["project_id"]))


def resolve_vars(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, Var):
        return values.get(value.name)
    if isinstance(value, list):
        return [resolve_vars(v, values) for v in value]
    if isinstance(value, dict):
        return {k: resolve_vars(v, values) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the server


class GitLabApiServer:
    """A threaded HTTP server answering as GitLab's `/api/v4` and `/api/graphql` over the lab DB.

    `graphql_failure` makes GraphQL misbehave for fallback tests: `error` (every query answers an
    error), `missing-field` (an older schema without `containerRepositories`), `http-500`.
    """

    def __init__(self, db_path: str | Path, token: str, latency: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, rate_limit_every: int | None = None, graphql_failure: str | None = None) -> None:
        if graphql_failure is not None and graphql_failure not in GRAPHQL_FAILURES:
            raise ValueError(f"graphql_failure must be one of {GRAPHQL_FAILURES}")
        self.db_path = str(db_path)
        self.token = token
        self.latency = latency
        self.host = host
        self.port = port
        self.rate_limit_every = rate_limit_every
        self.graphql_failure = graphql_failure
        self.requests: list[tuple[str, str]] = []
        self.registry_calls = 0
        self.count_limit = COUNT_LIMIT  # tests lower these to reach GitLab's large-instance behaviour
        self.max_offset = MAX_OFFSET
        self.store = Store(db_path)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.registry_calls = 0

    def start(self) -> GitLabApiServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="lab-gitlab-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.store.close()

    def __enter__(self) -> GitLabApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- bookkeeping shared by the handler threads

    def record(self, method: str, path: str) -> int:
        with self._lock:
            self.requests.append((method, path))
            return len(self.requests)

    def settings(self, conn: sqlite3.Connection) -> tuple[str, str]:
        version = schema.setting(conn, "gitlab_version", "17.5.0") or "17.5.0"
        host = schema.setting(conn, "registry_host_port")
        if not host:
            api_url = schema.setting(conn, "registry_api_url", "http://127.0.0.1:5000") or ""
            host = urllib.parse.urlsplit(api_url).netloc or "registry.lab"
        return version, host

    def registry_tags(self, conn: sqlite3.Connection, path: str) -> list[str]:
        """What GitLab does for `tags`/`tags_count`: ask the registry, live (counted, best effort)."""
        with self._lock:
            self.registry_calls += 1
        base = schema.setting(conn, "registry_api_url") or ""
        if not base.startswith(("http://", "https://")):
            return []
        try:
            with urllib.request.urlopen(f"{base.rstrip('/')}/v2/{path}/tags/list", timeout=2) as resp:  # noqa: S310
                return list(json.loads(resp.read()).get("tags") or [])
        except (OSError, ValueError, urllib.error.URLError):
            return []


class _Handler(BaseHTTPRequestHandler):
    api: GitLabApiServer
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""

    def setup(self) -> None:
        """TCP_NODELAY: headers and body go out in two writes; without it Nagle plus the client's
        delayed ACK add ~40 ms to every request, which no real GitLab front end does."""
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    def handle_any(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        number = self.api.record(method, self.path)
        if self.api.latency:
            time.sleep(self.api.latency)
        every = self.api.rate_limit_every
        if every and number % every == 0:
            self.send(Answer(429, "Retry later\n", {"Retry-After": "1", "RateLimit-Limit": "600"}))
            return
        try:
            answer = self.route(method, body)
        except ApiError as exc:
            answer = Answer(exc.status, {"message": exc.message})
        self.send(answer)

    def send(self, answer: Answer) -> None:
        if answer.body is None:
            data = b""
        elif isinstance(answer.body, str):
            data = answer.body.encode()
        else:
            data = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        ctype = "text/plain" if isinstance(answer.body, str) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def route(self, method: str, body: bytes) -> Answer:
        parts = urllib.parse.urlsplit(self.path)
        if self.headers.get("PRIVATE-TOKEN") != self.api.token:
            raise ApiError(401, "401 Unauthorized")
        with self.api.store.conn() as conn:
            version, registry_host = self.api.settings(conn)
            base_url = f"http://{self.headers.get('Host') or f'{self.api.host}:{self.api.port}'}"
            entities = Entities(version, base_url, registry_host, lambda p: self.api.registry_tags(conn, p))
            if parts.path == "/api/graphql" and method == "POST":
                return self.graphql(conn, entities, version, body)
            if not parts.path.startswith("/api/v4/"):
                raise ApiError(404, "404 Not Found")
            rest = Rest(conn, entities, version, base_url + parts.path,
                        dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)),
                        (self.api.count_limit, self.api.max_offset))
            segments = parts.path[len("/api/v4/"):].split("/")
            return rest.dispatch(method, [urllib.parse.unquote(s) for s in segments], body,
                                 self.headers.get("Content-Type", ""))

    def graphql(self, conn: sqlite3.Connection, entities: Entities, version: str, body: bytes) -> Answer:
        failure = self.api.graphql_failure
        if failure == "http-500":
            raise ApiError(500, "500 Internal Server Error")
        try:
            doc = json.loads(body or b"{}")
            if failure == "error":
                raise GraphQLError("Internal server error: the lab was told to fail GraphQL")
            missing = frozenset({("Project", "containerRepositories"), ("Group", "containerRepositories"),
                                 ("Project", "containerRepositoriesCount"), ("Group", "containerRepositoriesCount")}
                                if failure == "missing-field" else set())
            engine = GraphQL(conn, entities, version, missing)
            return Answer(200, engine.execute(str(doc.get("query") or ""), doc.get("variables")))
        except GraphQLError as exc:
            error: dict[str, Any] = {"message": exc.message}
            if exc.extensions:
                error["extensions"] = exc.extensions
            return Answer(200, {"errors": [error]})
        except ValueError:
            return Answer(200, {"errors": [{"message": "Invalid JSON in request body"}]})


class Rest:
    """The `/api/v4` routes glcleanup and python-gitlab use, one method each."""

    def __init__(self, conn: sqlite3.Connection, entities: Entities, version: str, link_base: str,
                 query: dict[str, str], limits: tuple[int, int] = (COUNT_LIMIT, MAX_OFFSET)) -> None:
        self.conn = conn
        self.e = entities
        self.version = version
        self.link_base = link_base
        self.query = query
        self.limits = limits

    def dispatch(self, method: str, seg: list[str], body: bytes, content_type: str) -> Answer:
        n = len(seg)
        head = seg[0]
        if method == "GET" and seg == ["version"]:
            return Answer(200, {"version": self.version, "revision": "0000000lab", "kas": {"enabled": False},
                                "enterprise": self.version.endswith("-ee")})
        if method == "GET" and seg == ["user"]:
            return Answer(200, self.current_user())
        if head == "projects":
            if method == "GET" and n == 1:
                return self.list_projects()
            if method == "GET" and n == 2:
                return Answer(200, self.e.project(find_project(self.conn, seg[1]), policy=self.policy_row(seg[1])))
            if method == "PUT" and n == 2:
                return self.update_project(seg[1], body, content_type)
            if n == 4 and seg[2:] == ["registry", "repositories"] and method == "GET":
                return self.project_repositories(seg[1])
            if n == 5 and seg[2:4] == ["registry", "repositories"]:
                if method == "GET":
                    return Answer(200, self.repository_in_project(seg[1], seg[4]))
                if method == "DELETE":
                    return self.schedule_delete(seg[1], seg[4])
        if head == "groups" and method == "GET":
            if n == 1:
                return self.list_groups()
            if n == 2:
                return Answer(200, self.group(seg[1]))
            if n == 3 and seg[2] == "projects":
                return self.group_projects(seg[1])
            if n == 4 and seg[2:] == ["registry", "repositories"]:
                return self.group_repositories(seg[1])
        if method == "GET" and n == 3 and seg[:2] == ["registry", "repositories"]:
            return self.instance_repository(seg[2])
        raise ApiError(404, "404 Not Found")

    # ---- helpers

    def paginate(self, sql: str, params: tuple[Any, ...], order: str,
                 render: Callable[[sqlite3.Row], dict[str, Any]]) -> Answer:
        page, per_page = page_params(self.query)
        total = int(self.conn.execute(f"SELECT COUNT(*) AS n FROM ({sql}) counted", params).fetchone()["n"])  # noqa: S608
        info = Page(page, per_page, total)
        rows = self.conn.execute(f"{sql} ORDER BY {order} LIMIT ? OFFSET ?",
                                 (*params, per_page, info.offset)).fetchall()
        return Answer(200, [render(r) for r in rows],
                      pagination_headers(info, self.link_base, self.query, self.limits[0]))

    def order(self, allowed: dict[str, str], default: str, default_sort: str) -> str:
        column = allowed.get(self.query.get("order_by", default), allowed[default])
        sort = self.query.get("sort", default_sort).lower()
        direction = "DESC" if sort == "desc" else "ASC"
        return f"{column} {direction}, {allowed['id']} {direction}"

    def current_user(self) -> dict[str, Any]:
        row = self.conn.execute("SELECT id, username FROM users WHERE admin ORDER BY id LIMIT 1").fetchone()
        uid, username = (row["id"], row["username"]) if row else (1, "root")
        return {"id": uid, "username": username, "name": username, "state": "active", "locked": False,
                "avatar_url": None, "web_url": f"{self.e.base_url}/{username}", "is_admin": True,
                "can_create_group": True, "can_create_project": True}

    def repo_flags(self) -> dict[str, bool]:
        return {"tags": truthy(self.query.get("tags")), "tags_count": truthy(self.query.get("tags_count"))}

    def policy_row(self, ref: str) -> sqlite3.Row | None:
        project = find_project(self.conn, ref)
        return one(self.conn, "SELECT * FROM container_expiration_policies WHERE project_id = ?",
                                 (project["id"],))

    # ---- projects

    def list_projects(self) -> Answer:
        simple = truthy(self.query.get("simple"))
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if self.query.get("search"):
            where.append("LOWER(r.path) LIKE LOWER(?)")
            params.append(f"%{self.query['search']}%")
        if "archived" in self.query:
            where.append("p.archived = ?")
            params.append(bool(truthy(self.query["archived"])))
        sql = PROJECT_SQL + " WHERE " + " AND ".join(where)
        render: Callable[[sqlite3.Row], dict[str, Any]] = lambda r: self.e.project(r, simple=simple)  # noqa: E731
        if self.query.get("pagination") == "keyset":
            return self.keyset(sql, params, render)
        page, per_page = page_params(self.query)
        if (page - 1) * per_page >= self.limits[1]:
            raise ApiError(405, f"Offset pagination has a maximum allowed offset of {self.limits[1]} for requests "
                                "that return objects of type Project. Remaining records can be retrieved using "
                                "keyset pagination.")
        order = self.order({"id": "p.id", "created_at": "p.created_at", "name": "p.name", "path": "p.path",
                            "updated_at": "p.updated_at"}, "created_at", "desc")
        return self.paginate(sql, tuple(params), order, render)

    def keyset(self, sql: str, params: list[Any], render: Callable[[sqlite3.Row], dict[str, Any]]) -> Answer:
        """`pagination=keyset&order_by=id`: `id_after`/`id_before`, a `Link: rel="next"` while more remain."""
        if self.query.get("order_by", "id") != "id":
            raise ApiError(405, "This endpoint does not support keyset pagination with this order_by")
        _page, per_page = page_params(self.query)
        descending = self.query.get("sort", "desc").lower() == "desc"
        key, op = ("id_before", "<") if descending else ("id_after", ">")
        if self.query.get(key, "").isdigit():
            sql += f" AND p.id {op} ?"
            params = [*params, int(self.query[key])]
        rows = self.conn.execute(f"{sql} ORDER BY p.id {'DESC' if descending else 'ASC'} LIMIT ?",
                                 (*params, per_page + 1)).fetchall()
        headers: dict[str, str] = {}
        if len(rows) > per_page:
            rows = rows[:per_page]
            query = {k: v for k, v in self.query.items() if k not in ("id_after", "id_before", "page")}
            link = f"{self.link_base}?{urllib.parse.urlencode({**query, key: rows[-1]['id']})}"
            headers = {"Link": f'<{link}>; rel="next"', "Links": f'<{link}>; rel="next"'}
        return Answer(200, [render(r) for r in rows], headers)

    def update_project(self, ref: str, body: bytes, content_type: str) -> Answer:
        """`PUT /projects/:id`: only `container_expiration_policy_attributes[enabled]` is modelled."""
        project = find_project(self.conn, ref)
        attrs = parse_body(body, content_type)
        policy = attrs.get("container_expiration_policy_attributes")
        enabled = policy.get("enabled") if isinstance(policy, dict) else None
        if enabled is None:
            enabled = attrs.get("container_expiration_policy_attributes[enabled]")
        if enabled is not None:
            now = schema.now_db()
            self.conn.execute(
                "INSERT INTO container_expiration_policies(project_id, created_at, updated_at, enabled) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(project_id) DO UPDATE SET enabled = excluded.enabled, "
                "updated_at = excluded.updated_at", (project["id"], now, now, bool(truthy(enabled))))
        return Answer(200, self.e.project(project, policy=self.policy_row(str(project["id"]))))

    def project_repositories(self, ref: str) -> Answer:
        project = find_project(self.conn, ref)
        if project["registry_level"] == 0:
            raise ApiError(403, "403 Forbidden")
        flags = self.repo_flags()
        return self.paginate(REPO_SQL + " WHERE c.project_id = ?", (project["id"],), "c.id ASC",
                             lambda r: self.e.repository(r, **flags))

    def repository_in_project(self, ref: str, rid: str) -> dict[str, Any]:
        project = find_project(self.conn, ref)
        row = self.conn.execute(REPO_SQL + " WHERE c.project_id = ? AND c.id = ?",
                                (project["id"], int(rid) if rid.isdigit() else -1)).fetchone()
        if row is None:
            raise ApiError(404, "404 Repository Not Found")
        return self.e.repository(row, **self.repo_flags())

    def schedule_delete(self, ref: str, rid: str) -> Answer:
        """What the UI/API does to start a deletion: `delete_scheduled!` and 202."""
        self.repository_in_project(ref, rid)
        self.conn.execute("UPDATE container_repositories SET status = ?, status_updated_at = ? WHERE id = ?",
                          (schema.STATUS["delete_scheduled"], schema.now_db(), int(rid)))
        return Answer(202, None)

    def instance_repository(self, rid: str) -> Answer:
        row = self.conn.execute(REPO_SQL + " WHERE c.id = ?", (int(rid) if rid.isdigit() else -1,)).fetchone()
        if row is None:
            raise ApiError(404, "404 Not found")
        return Answer(200, self.e.repository(row, **self.repo_flags()))

    # ---- groups

    def list_groups(self) -> Answer:
        where: list[str] = []
        params: list[Any] = []
        if truthy(self.query.get("top_level_only")):
            where.append("n.parent_id IS NULL")
        if self.query.get("search"):
            where.append("LOWER(r.path) LIKE LOWER(?)")
            params.append(f"%{self.query['search']}%")
        sql = GROUP_SQL + "".join(f" AND {w}" for w in where)
        order = self.order({"id": "n.id", "name": "n.name", "path": "n.path"}, "name", "asc")
        return self.paginate(sql, tuple(params), order, self.e.group)

    def group(self, ref: str) -> dict[str, Any]:
        row = find_group(self.conn, ref)
        out = self.e.group(row)
        if self.query.get("with_projects", "true").lower() != "false":  # deprecated, capped at 100
            projects = self.conn.execute(PROJECT_SQL + " WHERE p.namespace_id = ? ORDER BY p.id LIMIT 100",
                                         (row["id"],)).fetchall()
            out["projects"] = [self.e.project(p) for p in projects]
            out["shared_projects"] = []
        return out

    def group_projects(self, ref: str) -> Answer:
        row = find_group(self.conn, ref)
        if truthy(self.query.get("include_subgroups")):
            sql = TREE_CTE + PROJECT_SQL + " WHERE p.namespace_id IN (SELECT id FROM tree)"  # noqa: S608
        else:
            sql = PROJECT_SQL + " WHERE p.namespace_id = ?"
        simple = truthy(self.query.get("simple"))
        order = self.order({"id": "p.id", "created_at": "p.created_at", "name": "p.name", "path": "p.path"},
                           "created_at", "desc")
        return self.paginate(sql, (row["id"],), order, lambda r: self.e.project(r, simple=simple))

    def group_repositories(self, ref: str) -> Answer:
        """Group and all subgroups, registry-enabled projects only; `tags`/`tags_count` forced off."""
        row = find_group(self.conn, ref)
        return self.paginate(group_repositories_sql(), (row["id"],), "c.id ASC", self.e.repository)


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, "400 Bad request - invalid JSON") from exc
        return data if isinstance(data, dict) else {}
    return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))


__all__ = ["GitLabApiServer", "GraphQL", "GraphQLError", "pagination_headers"]
