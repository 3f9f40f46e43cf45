"""Groups of staff on PostgreSQL (`CriticalStore`'s groups and members, with an on-duty switch
per member): a mixin of `PgStore`, the twin of the groups part of `store.sqlite.critical`.
Listed in byte order, as SQLite orders text, whatever the database's collation."""

from __future__ import annotations

from diagnoxix.models import parse_timestamp
from diagnoxix.store.critical_records import Group, GroupMember
from diagnoxix.store.postgres.access import PgAccess, WriteTx


class GroupQueries(PgAccess):
    """The groups of `CriticalStore` on PostgreSQL."""

    async def put_group(self, name: str) -> bool:
        stamp = self._now_stamp()

        async def put(tx: WriteTx) -> bool:
            return bool(
                await tx.conn.fetchval(
                    "INSERT INTO groups (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
                    " RETURNING 1",
                    name,
                    stamp,
                )
            )

        return await self._write(put)

    async def delete_group(self, name: str) -> bool:
        async def delete(tx: WriteTx) -> bool:
            return bool(await tx.conn.fetchval("DELETE FROM groups WHERE name = $1 RETURNING 1", name))

        return await self._write(delete)

    async def list_groups(self) -> list[Group]:
        rows = await self._fetch(
            "SELECT g.name, g.created_at, count(m.user_id), coalesce(sum(m.on_duty), 0) FROM groups AS g"
            " LEFT JOIN group_members AS m ON m.group_name = g.name"
            ' GROUP BY g.name ORDER BY g.name COLLATE "C"'
        )
        return [Group(r[0], parse_timestamp(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def group_members(self, name: str) -> list[GroupMember] | None:
        rows = await self._fetch(
            "SELECT m.user_id, m.on_duty, m.added_at FROM groups AS g"
            " LEFT JOIN group_members AS m ON m.group_name = g.name"
            ' WHERE g.name = $1 ORDER BY m.user_id COLLATE "C"',
            name,
        )
        if not rows:
            return None
        return [GroupMember(name, r[0], bool(r[1]), parse_timestamp(r[2])) for r in rows if r[0] is not None]

    async def set_group_member(self, name: str, user_id: str, on_duty: bool) -> bool:
        stamp = self._now_stamp()

        async def put(tx: WriteTx) -> bool:
            return bool(
                await tx.conn.fetchval(
                    "INSERT INTO group_members (group_name, user_id, on_duty, added_at)"
                    " SELECT name, $1, $2, $3 FROM groups WHERE name = $4"
                    " ON CONFLICT (group_name, user_id) DO UPDATE SET on_duty = excluded.on_duty RETURNING 1",
                    user_id,
                    int(on_duty),
                    stamp,
                    name,
                )
            )

        return await self._write(put)

    async def remove_group_member(self, name: str, user_id: str) -> bool:
        async def remove(tx: WriteTx) -> bool:
            return bool(
                await tx.conn.fetchval(
                    "DELETE FROM group_members WHERE group_name = $1 AND user_id = $2 RETURNING 1",
                    name,
                    user_id,
                )
            )

        return await self._write(remove)
