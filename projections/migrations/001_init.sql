-- The read model of keyledger: projects, user API keys, and how far the stream has been
-- applied. {schema} is replaced with the quoted schema name at migration time.

CREATE TABLE {schema}.projects (
    id              text        PRIMARY KEY,
    name            text        NOT NULL,
    server_key_id   text        NOT NULL,
    server_key_hash text        NOT NULL,
    created_at      timestamptz NOT NULL,
    seq             bigint      NOT NULL
);

CREATE TABLE {schema}.api_keys (
    project_id          text        NOT NULL,
    id                  text        NOT NULL,
    user_id             text        NOT NULL,
    description         text        NOT NULL,
    expires_at          timestamptz,
    manually_revoked_at timestamptz,
    created_at          timestamptz NOT NULL,
    is_public           boolean     NOT NULL,
    secret_hash         text        NOT NULL,
    last_four           text        NOT NULL,
    version             integer     NOT NULL,
    last_seq            bigint      NOT NULL,
    created_seq         bigint      NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- GET /user-api-keys?user_id=U: newest first, ties broken by stream order.
CREATE INDEX api_keys_by_user ON {schema}.api_keys (project_id, user_id, created_at DESC, created_seq DESC);

-- One row: the stream sequence of the last event applied. Its row lock serialises every
-- projector writing into this schema.
CREATE TABLE {schema}.checkpoint (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO {schema}.checkpoint (position) VALUES (0);
