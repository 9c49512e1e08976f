package api

import (
	"context"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/projections"
)

// keyKind is one of the two families of key endpoints, Stack Auth's user and team API keys
// (CONTRACT section 6): the same rules, errors and events, a key's owner named by user_id or
// team_id. Every key handler is made for one kind; a key of the other kind is not found on
// its paths, and its check answers WRONG_API_KEY_TYPE.
type keyKind struct {
	typ domain.KeyType
	// path is the collection's path under the API root.
	path string
	// ownerField is the name of the owner's id in bodies, queries and key objects.
	ownerField string
	// validateOwner checks an owner id (the domain's rules for it).
	validateOwner func(field, s string) error
	// keysOf lists an owner's keys, newest first.
	keysOf func(rm projections.ReadModel, ctx context.Context, projectID, owner string) ([]projections.KeyView, error)
}

var (
	userKeys = keyKind{
		typ: domain.KeyTypeUser, path: "/api/v1/user-api-keys", ownerField: "user_id",
		validateOwner: domain.ValidateUserID, keysOf: projections.ReadModel.KeysByUser,
	}
	teamKeys = keyKind{
		typ: domain.KeyTypeTeam, path: "/api/v1/team-api-keys", ownerField: "team_id",
		validateOwner: domain.ValidateTeamID, keysOf: projections.ReadModel.KeysByTeam,
	}
	// keyKinds are the kinds keysd serves, each under its own path.
	keyKinds = []keyKind{userKeys, teamKeys}
)

// owns reports whether a key is of this kind.
func (k keyKind) owns(key domain.KeySnapshot) bool { return key.Type() == k.typ }
