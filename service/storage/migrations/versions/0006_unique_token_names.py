"""API token names are unique: a token's name is the audit log's actor and a rollout's approver
identity, so two tokens of one name would be one person to the two-person rule.

Existing duplicates keep the oldest token's name; each later one is renamed `NAME#<id prefix>`
(the rename is what the audit log will show for it from now on; its past entries keep the old
name).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_UNIQUE = "uq_api_tokens_name"


def upgrade() -> None:
    conn = op.get_bind()
    tokens = sa.table("api_tokens", sa.column("id"), sa.column("name"), sa.column("created_at"))
    seen: set[str] = set()
    rows = conn.execute(
        sa.select(tokens.c.id, tokens.c.name).order_by(tokens.c.created_at, tokens.c.id)
    ).all()
    for token_id, name in rows:
        if name in seen:
            renamed = f"{name[:180]}#{token_id[:12]}"
            conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(name=renamed))
            seen.add(renamed)
        else:
            seen.add(name)
    with op.batch_alter_table("api_tokens") as batch:
        batch.create_unique_constraint(_UNIQUE, ["name"])


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint(_UNIQUE, type_="unique")
