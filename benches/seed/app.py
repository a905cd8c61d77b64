"""The seed stack: a FastAPI + aiosqlite re-creation of the original plan's server.

A peer for the HTTP comparison of `scale` (section E, `--seed-url`), not part of the
library and never shipped. It serves the routes that comparison uses, with the same
paths and the same JSON shape (camelCase) as `conversation-adapter-http`:

    POST /api/v1/connections/{scope}/conversations               create -> 201
    GET  /api/v1/connections/{scope}/conversations/{id}          one conversation, ETag
    GET  /api/v1/connections/{scope}/conversations/{id}/messages newest page (?limit=20)
    POST /api/v1/connections/{scope}/conversations/{id}/messages append one or a batch -> 201

Storage is what the plan named: SQLite through aiosqlite, WAL, synchronous=FULL (an
acknowledged append is durable), foreign keys on; one long-lived writer connection
behind a lock (BEGIN IMMEDIATE per append) and one long-lived reader connection.
Requests and responses are validated by pydantic models, as a FastAPI app does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from contextlib import asynccontextmanager
from typing import Literal, Optional, Union

import aiosqlite
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DB_PATH = os.environ.get("SEED_DB", "seed.db")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id            TEXT PRIMARY KEY,
    scope         TEXT    NOT NULL,
    title         TEXT,
    title_source  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    head_id       TEXT,
    pinned        INTEGER NOT NULL,
    archived      INTEGER NOT NULL,
    metadata      TEXT    NOT NULL,
    version       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_activity
    ON conversations (scope, archived, updated_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    id              TEXT    NOT NULL,
    parent_id       TEXT,
    role            TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    tool_calls      TEXT    NOT NULL,
    tool_call_id    TEXT,
    metadata        TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
"""

CONVERSATION_COLUMNS = (
    "id, scope, title, title_source, created_at, updated_at, message_count, last_seq, "
    "head_id, pinned, archived, metadata, version"
)
MESSAGE_COLUMNS = (
    "id, conversation_id, seq, parent_id, role, content, tool_calls, tool_call_id, "
    "metadata, created_at"
)


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Conversation(Wire):
    id: str
    scope: str
    title: Optional[str]
    title_source: str
    created_at: str
    updated_at: str
    message_count: int
    last_seq: int
    head_id: Optional[str]
    pinned: bool
    archived: bool
    archived_at: Optional[str] = None
    metadata: dict
    version: int


class ToolCall(Wire):
    id: str
    name: str
    arguments: dict


class Message(Wire):
    id: str
    conversation_id: str
    seq: int
    parent_id: Optional[str]
    sibling_ids: list[str]
    sibling_count: int
    sibling_index: int
    role: str
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: Optional[str]
    metadata: dict
    created_at: str


class MessagePage(Wire):
    items: list[Message]
    next_cursor: Optional[str]


class NewConversation(Wire):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")
    title: Optional[str] = Field(default=None, max_length=200)
    metadata: dict = Field(default_factory=dict)


class NewMessage(Wire):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")
    id: Optional[str] = None
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=256 * 1024)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: Optional[str] = None
    metadata: dict = Field(default_factory=dict)


class AppendResult(Wire):
    conversation: Conversation
    messages: list[Message]


def now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def iso(ms: int) -> str:
    at = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def conversation_of(row) -> Conversation:
    return Conversation(
        id=row[0],
        scope=row[1],
        title=row[2],
        title_source=row[3],
        created_at=iso(row[4]),
        updated_at=iso(row[5]),
        message_count=row[6],
        last_seq=row[7],
        head_id=row[8],
        pinned=bool(row[9]),
        archived=bool(row[10]),
        metadata=json.loads(row[11]),
        version=row[12],
    )


def message_of(row) -> Message:
    return Message(
        id=row[0],
        conversation_id=row[1],
        seq=row[2],
        parent_id=row[3],
        sibling_ids=[row[0]],
        sibling_count=1,
        sibling_index=0,
        role=row[4],
        content=row[5],
        tool_calls=json.loads(row[6]),
        tool_call_id=row[7],
        metadata=json.loads(row[8]),
        created_at=iso(row[9]),
    )


async def connect(path: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("PRAGMA foreign_keys = ON")
    await db.execute("PRAGMA busy_timeout = 5000")
    return db


class Db:
    reader: aiosqlite.Connection
    writer: aiosqlite.Connection
    write_lock: asyncio.Lock


db = Db()


@asynccontextmanager
async def lifespan(_: FastAPI):
    db.writer = await connect(DB_PATH)
    await db.writer.executescript(SCHEMA)
    db.reader = await connect(DB_PATH)
    db.write_lock = asyncio.Lock()
    yield
    await db.reader.close()
    await db.writer.close()


app = FastAPI(title="seed stack", lifespan=lifespan)
PREFIX = "/api/v1/connections/{scope}/conversations"


async def read_conversation(conn: aiosqlite.Connection, scope: str, id: str):
    async with conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND scope = ?",
        (id, scope),
    ) as cursor:
        return await cursor.fetchone()


@app.post(PREFIX, status_code=201, response_model=Conversation, response_model_by_alias=True)
async def create_conversation(scope: str, body: NewConversation, response: Response):
    at = now_ms()
    id = str(uuid.uuid4())
    async with db.write_lock:
        await db.writer.execute("BEGIN IMMEDIATE")
        try:
            await db.writer.execute(
                f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, 0, 0, ?, 1)",
                (id, scope, body.title, "user" if body.title else "none", at, at,
                 json.dumps(body.metadata)),
            )
            row = await read_conversation(db.writer, scope, id)
            await db.writer.execute("COMMIT")
        except BaseException:
            await db.writer.execute("ROLLBACK")
            raise
    response.headers["Location"] = f"/api/v1/connections/{scope}/conversations/{id}"
    return conversation_of(row)


@app.get(PREFIX + "/{id}", response_model=Conversation, response_model_by_alias=True)
async def get_conversation(scope: str, id: str, response: Response):
    row = await read_conversation(db.reader, scope, id)
    if row is None:
        raise HTTPException(status_code=404, detail="conversation not found")
    response.headers["ETag"] = f'"{row[12]}"'
    return conversation_of(row)


@app.get(PREFIX + "/{id}/messages", response_model=MessagePage, response_model_by_alias=True)
async def list_messages(
    scope: str,
    id: str,
    limit: int = Query(default=50, ge=1, le=200),
    before: Optional[int] = Query(default=None, ge=1),
):
    if await read_conversation(db.reader, scope, id) is None:
        raise HTTPException(status_code=404, detail="conversation not found")
    async with db.reader.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq < ? "
        "ORDER BY seq DESC LIMIT ?",
        (id, before if before is not None else 2**62, limit + 1),
    ) as cursor:
        rows = await cursor.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    items = [message_of(row) for row in rows]
    return MessagePage(items=items, next_cursor=str(items[0].seq) if more and items else None)


@app.post(
    PREFIX + "/{id}/messages",
    status_code=201,
    response_model=AppendResult,
    response_model_by_alias=True,
)
async def append_messages(scope: str, id: str, body: Union[NewMessage, list[NewMessage]]):
    messages = body if isinstance(body, list) else [body]
    if not messages or len(messages) > 256:
        raise HTTPException(status_code=422, detail="1 to 256 messages")
    async with db.write_lock:
        await db.writer.execute("BEGIN IMMEDIATE")
        try:
            row = await read_conversation(db.writer, scope, id)
            if row is None:
                raise HTTPException(status_code=404, detail="conversation not found")
            at = max(now_ms(), row[5])
            seq, parent = row[7], row[8]
            stored = []
            for message in messages:
                seq += 1
                message_id = message.id or str(uuid.uuid4())
                values = (
                    message_id, id, seq, parent, message.role, message.content,
                    json.dumps([call.model_dump() for call in message.tool_calls]),
                    message.tool_call_id, json.dumps(message.metadata), at,
                )
                await db.writer.execute(
                    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                stored.append(values)
                parent = message_id
            await db.writer.execute(
                "UPDATE conversations SET updated_at = ?, message_count = message_count + ?, "
                "last_seq = ?, head_id = ?, version = version + 1 WHERE id = ?",
                (at, len(messages), seq, parent, id),
            )
            row = await read_conversation(db.writer, scope, id)
            await db.writer.execute("COMMIT")
        except BaseException:
            await db.writer.execute("ROLLBACK")
            raise
    return AppendResult(
        conversation=conversation_of(row),
        messages=[
            message_of((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]))
            for v in stored
        ],
    )
