-- Team API keys (CONTRACT section 6): a key belongs to a user (user_id) or to a team
-- (team_id); the other column is ''. {schema} is replaced with the quoted schema name.

ALTER TABLE {schema}.api_keys ADD COLUMN team_id text NOT NULL DEFAULT '';

-- GET /user-api-keys?user_id=U and GET /team-api-keys?team_id=T: newest first, ties broken by
-- stream order. Both indexes are partial, so that the projector's lookup of keys by primary
-- key (selectKeysByRef) can use no other index: the wider row made the planner's estimate of
-- an empty, never analysed table tie the user index with the primary key, and pick the one
-- that scans a whole project (TestPostgresKeyLookupPlanIsTheIndex).
DROP INDEX {schema}.api_keys_by_user;
CREATE INDEX api_keys_by_user ON {schema}.api_keys (project_id, user_id, created_at DESC, created_seq DESC) WHERE team_id = '';
CREATE INDEX api_keys_by_team ON {schema}.api_keys (project_id, team_id, created_at DESC, created_seq DESC) WHERE team_id <> '';
