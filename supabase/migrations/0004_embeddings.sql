-- Schema version 4 (PostgreSQL, also Supabase): embedding vectors, cached by text hash.
-- One row per (model, sha256 of the embedded text), so no text is embedded twice by any
-- worker, and dense retrieval reads its vectors from the store instead of a side file.
--
-- Works with and without pgvector. Where the server offers the `vector` extension (as
-- Supabase does), it is created (in Supabase's `extensions` schema when there is one),
-- the column is pgvector's `vector` and the database searches it: the store uses the
-- `<=>` (cosine distance) operator, and `match_embeddings` is the same search for
-- PostgREST's RPC (`POST /rest/v1/rpc/match_embeddings`). Elsewhere the column is
-- `real[]` (pgvector's precision too) and the engine searches in memory. The column has
-- no fixed dimension because models differ (`dims` says it), so there is no ANN index:
-- exact search over a knowledge base's few thousand chunks is fast enough and exact.
-- A server that gains pgvector later: re-run this file (psql -f), which converts the
-- column and creates the function. Creating the extension needs a superuser (pgvector
-- is not a trusted extension); without the right, the migration goes on without it.
--
-- Row-level security is on and no policy is defined, like every table here; the
-- function runs with its caller's rights, so the anon key gets no rows from it either.
-- Re-runnable; the SQLite twin is ../sqlite/0004_embeddings.sql.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')
       AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'extensions') THEN
                CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions;
            ELSE
                CREATE EXTENSION IF NOT EXISTS vector;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pgvector is available but this role may not create it: '
                'embeddings are stored as real[] and searched by the engine';
        END;
    END IF;
END
$$;

DO $$
DECLARE
    ext text := (SELECT n.nspname FROM pg_extension e
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector');
    vec text := CASE WHEN ext IS NULL THEN 'real[]' ELSE format('%I.vector', ext) END;
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS embeddings ('
        '    model       text NOT NULL,'
        '    text_hash   text NOT NULL,'
        '    dims        integer NOT NULL,'
        '    vector      %s NOT NULL,'
        '    created_at  timestamptz NOT NULL DEFAULT now(),'
        '    PRIMARY KEY (model, text_hash))', vec);
    IF ext IS NULL THEN
        RETURN;
    END IF;
    -- Made before pgvector was there: the same numbers, now searchable in the database.
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = 'embeddings'::regclass
        AND attname = 'vector') = 'real[]'::regtype THEN
        EXECUTE format('ALTER TABLE embeddings ALTER COLUMN vector TYPE %s USING vector::%s',
                       vec, vec);
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$I.match_embeddings(
            model text, query %2$s, hashes text[], k integer)
        RETURNS TABLE (text_hash text, similarity double precision)
        LANGUAGE sql STABLE SET search_path = ''
        AS $body$
            SELECT e.text_hash, 1 - (e.vector OPERATOR(%3$I.<=>) query) AS similarity
            FROM %1$I.embeddings e
            WHERE e.model = match_embeddings.model AND e.text_hash = ANY (hashes)
              AND e.dims = %3$I.vector_dims(query)
            ORDER BY e.vector OPERATOR(%3$I.<=>) query, e.text_hash
            LIMIT k
        $body$ $f$, current_schema(), vec, ext);
END
$$;

ALTER TABLE embeddings ENABLE ROW LEVEL SECURITY;

-- PostgREST (Supabase's REST API) learns about the new table and function.
NOTIFY pgrst, 'reload schema';

INSERT INTO schema_version(version) VALUES (4) ON CONFLICT (version) DO NOTHING;
