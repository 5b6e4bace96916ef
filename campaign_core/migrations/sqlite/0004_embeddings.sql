-- Schema version 4 (SQLite): embedding vectors, cached by text hash.
-- One row per (model, sha256 of the embedded text), so no text is embedded twice by any
-- worker, and dense retrieval reads its vectors from the store instead of a side file.
-- The vector is `dims` little-endian float32 values in a BLOB; SQLite cannot search it,
-- so the engine does, in memory (exact cosine). No fixed dimension: models differ.
-- The PostgreSQL twin (pgvector where the server has it) is ../postgres/0004_embeddings.sql.

CREATE TABLE IF NOT EXISTS embeddings (
    model           TEXT NOT NULL,
    text_hash       TEXT NOT NULL,
    dims            INTEGER NOT NULL,
    vector          BLOB NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (model, text_hash)
);

INSERT INTO schema_version(version, applied_at)
VALUES (4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
