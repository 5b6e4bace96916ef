"""PostgREST's HTTP surface, for the subset the Supabase store uses, answered by a real Postgres.

The Supabase store is tested at the HTTP level: its requests go through an httpx
`MockTransport` to this fake, which translates them into SQL against the test's
Postgres database (the same migrations) the way PostgREST does: `select`, filters
(`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `is`, `in`), `order`, `limit`/`offset`,
`Prefer: count=exact` with `Content-Range`, upserts through
`json_populate_recordset` with `on_conflict` and `resolution=merge|ignore-duplicates`,
`PATCH`, `DELETE`, functions (`POST /rpc/<name>` with named arguments), and errors as
PostgREST's JSON (`code`, `message`, `details`, `hint`). Every request is recorded so
tests can check what was asked for.

It is stricter than PostgREST in one way on purpose: an upsert without
`on_conflict` is refused, because the store must always name its natural key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import sql

RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}
PREFIX = "/rest/v1/"


@dataclass
class Call:
    """One request as the fake saw it."""

    method: str
    table: str
    params: list[tuple[str, str]]
    prefer: set[str]
    headers: httpx.Headers
    body: Any = None

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclass
class FakePostgrest:
    db_url: str
    calls: list[Call] = field(default_factory=list)
    #: Answers to give instead of the database, first come first served (fault injection):
    #: a callable gets the request and returns a response or raises (e.g. httpx.ConnectError).
    faults: list[Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    _conn: psycopg.AsyncConnection[Any] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def calls_to(self, table: str, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.table == table and (method is None or c.method == method)]

    # -- HTTP ------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        path = request.url.path
        assert path.startswith(PREFIX), f"not a PostgREST path: {path}"
        table = path[len(PREFIX):]
        prefer = {p.strip() for h in request.headers.get_list("prefer") for p in h.split(",")}
        body = json.loads(request.content) if request.content else None
        self.calls.append(Call(request.method, table, list(request.url.params.multi_items()),
                               prefer, request.headers, body))
        if self.faults:
            return self.faults.pop(0)(request)
        async with self._lock:
            if self._conn is None:
                self._conn = await psycopg.AsyncConnection.connect(self.db_url, autocommit=True)
            try:
                return await self._answer(self._conn, request.method, table, request.url.params,
                                          prefer, body)
            except psycopg.Error as exc:
                return self._error(exc)

    @staticmethod
    def _error(exc: psycopg.Error) -> httpx.Response:
        code = exc.sqlstate or "XX000"
        status = 409 if code in {"23505", "23503"} else 400 if code[:2] in {"22", "23"} else 500
        diag = exc.diag
        return httpx.Response(status, json={
            "code": code, "message": diag.message_primary or str(exc),
            "details": diag.message_detail, "hint": diag.message_hint})

    async def _answer(self, conn: psycopg.AsyncConnection[Any], method: str, table: str,
                      params: httpx.QueryParams, prefer: set[str], body: Any) -> httpx.Response:
        if table.startswith("rpc/") and method == "POST":
            return await self._rpc(conn, table.removeprefix("rpc/"), body or {})
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
        row = await cur.fetchone()
        if not row or not row[0]:
            return httpx.Response(404, json={
                "code": "PGRST205", "details": None, "hint": None,
                "message": f"Could not find the table 'public.{table}' in the schema cache"})
        tbl = sql.Identifier(table)
        where, args = self._where(params, table)
        representation = "return=representation" in prefer
        if method in {"GET", "HEAD"}:
            return await self._select(conn, tbl, params, prefer, where, args, method == "HEAD")
        if method == "POST":
            return await self._insert(conn, tbl, params, prefer, body, representation)
        if method == "PATCH":
            q = sql.SQL("UPDATE {t} SET {sets} FROM json_populate_record(NULL::{t}, %s::json) AS r "
                        "{where} RETURNING {t}.*").format(
                t=tbl, where=where,
                sets=sql.SQL(", ").join(sql.SQL("{c} = r.{c}").format(c=sql.Identifier(c))
                                        for c in body))
            return await self._write(conn, q, [json.dumps(body), *args], representation, 200)
        if method == "DELETE":
            q = sql.SQL("DELETE FROM {t} {where} RETURNING *").format(t=tbl, where=where)
            return await self._write(conn, q, args, representation, 200)
        return httpx.Response(405)

    @staticmethod
    async def _rpc(conn: psycopg.AsyncConnection[Any], name: str, args: dict[str, Any]
                   ) -> httpx.Response:
        """`POST /rpc/<function>` as PostgREST calls it: the JSON body's keys are named
        arguments, each read as the function's own argument type (`json_to_record`)."""
        cur = await conn.execute(
            "SELECT p.proargnames, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) "
            "FROM pg_proc p WHERE p.proname = %s AND p.pronamespace = 'public'::regnamespace "
            "AND p.pronargs = %s", (name, len(args)))
        row = await cur.fetchone()
        if row is None or not row[0] or set(row[0][:len(row[1])]) != set(args):
            return httpx.Response(404, json={
                "code": "PGRST202", "details": None, "hint": None,
                "message": f"Could not find the function public.{name} in the schema cache"})
        names, types = row[0][:len(row[1])], row[1]
        q = sql.SQL("SELECT coalesce(json_agg(r), '[]'::json) FROM json_to_record(%s::json) "
                    "AS a({defs}), LATERAL {fn}({call}) AS r").format(
            defs=sql.SQL(", ").join(sql.SQL("{} " + t).format(sql.Identifier(n))
                                    for n, t in zip(names, types, strict=True)),
            fn=sql.Identifier("public", name),
            call=sql.SQL(", ").join(sql.SQL("{n} => a.{n}").format(n=sql.Identifier(n))
                                    for n in names))
        cur = await conn.execute(q, (json.dumps(args),))
        result = await cur.fetchone()
        return httpx.Response(200, json=result[0] if result else [])

    # -- SQL ---------------------------------------------------------------------

    @staticmethod
    def _in_values(raw: str) -> list[str]:
        """`(a,"b,c",d)` -> ["a", "b,c", "d"]: PostgREST's list syntax with quoting."""
        inner = raw[1:-1] if raw.startswith("(") and raw.endswith(")") else raw
        out, buf, quoted, escaped = [], "", False, False
        for ch in inner:
            if escaped:
                buf, escaped = buf + ch, False
            elif ch == "\\" and quoted:
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                out.append(buf)
                buf = ""
            else:
                buf += ch
        if inner:
            out.append(buf)
        return out

    def _where(self, params: httpx.QueryParams, table: str) -> tuple[sql.Composable, list[Any]]:
        ops = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        conds: list[sql.Composable] = []
        args: list[Any] = []
        for key, value in params.multi_items():
            if key in RESERVED:
                continue
            op, _, operand = value.partition(".")
            col = sql.Identifier(table, key)
            if op in ops:
                conds.append(sql.SQL("{} " + ops[op] + " %s").format(col))
                args.append(operand)
            elif op == "is":
                assert operand in {"null", "true", "false"}, value
                conds.append(sql.SQL("{} IS " + operand.upper()).format(col))
            elif op == "in":
                conds.append(sql.SQL("{}::text = ANY(%s::text[])").format(col))
                args.append(self._in_values(operand))
            else:
                raise AssertionError(f"filter the fake does not know: {key}={value}")
        if not conds:
            return sql.SQL(""), args
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conds), args

    @staticmethod
    def _order(params: httpx.QueryParams) -> sql.Composable:
        raw = params.get("order")
        if not raw:
            return sql.SQL("")
        parts = []
        for item in raw.split(","):
            col, _, direction = item.partition(".")
            parts.append(sql.SQL("{} " + ("DESC" if direction.startswith("desc") else "ASC"))
                         .format(sql.Identifier(col)))
        return sql.SQL("ORDER BY ") + sql.SQL(", ").join(parts)

    async def _select(self, conn: psycopg.AsyncConnection[Any], tbl: sql.Identifier,
                      params: httpx.QueryParams, prefer: set[str], where: sql.Composable,
                      args: list[Any], head: bool) -> httpx.Response:
        select = params.get("select", "*")
        cols = sql.SQL("*") if select == "*" else sql.SQL(", ").join(
            sql.Identifier(c.strip()) for c in select.split(","))
        limit = int(params["limit"]) if "limit" in params else None
        offset = int(params.get("offset", "0"))
        q = sql.SQL("SELECT coalesce(json_agg(t), '[]'::json) FROM "
                    "(SELECT {cols} FROM {t} {where} {order} LIMIT {limit} OFFSET {offset}) t").format(
            cols=cols, t=tbl, where=where, order=self._order(params),
            limit=sql.Literal(limit) if limit is not None else sql.SQL("ALL"),
            offset=sql.Literal(offset))
        cur = await conn.execute(q, args)
        row = await cur.fetchone()
        rows = row[0] if row else []
        total = "*"
        if "count=exact" in prefer:
            cur = await conn.execute(
                sql.SQL("SELECT count(*) FROM {t} {where}").format(t=tbl, where=where), args)
            counted = await cur.fetchone()
            total = str(counted[0] if counted else 0)
        span = f"{offset}-{offset + len(rows) - 1}" if rows else "*"
        headers = {"Content-Range": f"{span}/{total}", "Content-Type": "application/json"}
        if head:
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, headers=headers, content=json.dumps(rows).encode())

    async def _insert(self, conn: psycopg.AsyncConnection[Any], tbl: sql.Identifier,
                      params: httpx.QueryParams, prefer: set[str], body: Any,
                      representation: bool) -> httpx.Response:
        rows = body if isinstance(body, list) else [body]
        if "columns" in params:
            columns = [c.strip().strip('"') for c in params["columns"].split(",")]
        else:
            columns = list(dict.fromkeys(k for r in rows for k in r))
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        conflict: sql.Composable = sql.SQL("")
        resolution = next((p.split("=", 1)[1] for p in prefer if p.startswith("resolution=")), None)
        if resolution:
            if "on_conflict" not in params:
                return httpx.Response(400, json={"code": "FAKE1", "message": "upsert without on_conflict",
                                                 "details": None, "hint": None})
            keys = params["on_conflict"].split(",")
            target = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
            updates = [c for c in columns if c not in keys]
            if resolution == "ignore-duplicates" or not updates:
                conflict = sql.SQL("ON CONFLICT ({}) DO NOTHING").format(target)
            else:
                conflict = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(
                    target, sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                               for c in updates))
        q = sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} "
                    "FROM json_populate_recordset(NULL::{t}, %s::json) {conflict} RETURNING *").format(
            t=tbl, cols=cols, conflict=conflict)
        return await self._write(conn, q, [json.dumps(rows)], representation, 201)

    @staticmethod
    async def _write(conn: psycopg.AsyncConnection[Any], q: sql.Composable, args: list[Any],
                     representation: bool, status: int) -> httpx.Response:
        wrapped = sql.SQL("WITH w AS ({}) SELECT coalesce(json_agg(w), '[]'::json) FROM w").format(q)
        cur = await conn.execute(wrapped, args)
        row = await cur.fetchone()
        rows = row[0] if row else []
        if representation:
            return httpx.Response(status, json=rows)
        return httpx.Response(204 if status == 200 else status)
