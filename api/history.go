package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// eventList is the response of GET /user-api-keys/{api_key_id}/events: a page of the key's
// events as docs/events.md describes them, oldest first, and the cursor of the next page
// (null after the last).
type eventList struct {
	IsPaginated bool              `json:"is_paginated"`
	Items       []json.RawMessage `json:"items"`
	Pagination  pagination        `json:"pagination"`
}

type pagination struct {
	NextCursor *string `json:"next_cursor"`
}

// historyPageLimit is the most events one page of a key's history carries, and the default.
const historyPageLimit = 1000

// keyEvents is GET /user-api-keys/{api_key_id}/events[?cursor=&limit=]: a page of the key's
// history, read from the event store (the source of truth, current without waiting for any
// projector), in the current schema version. Messages on the key's subjects that are not
// events are left out, as every reader leaves them out. The cursor is the stream sequence
// of the last event of the previous page; a key renamed a million times is read a page at a
// time instead of at once.
//
// On the team path it serves team keys only, on the user path user keys only: a key of the
// other kind is not found.
func (s *server) keyEvents(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		s.writeKeyEvents(w, r, caller, kind)
	}
}

func (s *server) writeKeyEvents(w http.ResponseWriter, r *http.Request, caller commands.Caller, kind keyKind) {
	id, after, limit, err := decodeHistory(r, kind)
	if err != nil {
		writeError(w, r, err)
		return
	}
	// The key's version at the cursor: each page goes on from it, so that an event out of
	// the key's version order (a genuine event published again later) is left out, as every
	// reader leaves it out. A cursor that is not one of the key's messages is a key not found.
	version := 0
	if after > 0 {
		if version, err = s.versionAt(r, caller.ProjectID, id, after); err != nil {
			writeError(w, r, err)
			return
		}
	}
	records, more, err := s.d.Store.LoadKeyPage(r.Context(), caller.ProjectID, id, after, limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	list := eventList{IsPaginated: true, Items: make([]json.RawMessage, 0, len(records))}
	var cursor, lastEvent uint64 // the last event of the page, else its last message
	for _, rec := range records {
		cursor = max(cursor, rec.Seq)
		if rec.Err != nil || !nextInOrder(version, rec.Event) {
			continue
		}
		if (rec.Event.TeamID != "") != (kind.typ == domain.KeyTypeTeam) {
			writeError(w, r, domain.ErrKeyNotFound) // a key of the other kind
			return
		}
		version = rec.Event.Version
		doc, err := domain.MarshalEvent(rec.Event)
		if err != nil {
			writeError(w, r, fmt.Errorf("encode event %d of key %s: %w", rec.Seq, id, err))
			return
		}
		list.Items = append(list.Items, doc)
		lastEvent = rec.Seq
	}
	if lastEvent > 0 {
		cursor = lastEvent
	}
	if after == 0 && len(list.Items) == 0 && !more {
		writeError(w, r, domain.ErrKeyNotFound) // no events, or only garbage on its subjects
		return
	}
	if more {
		next := strconv.FormatUint(cursor, 10)
		list.Pagination.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, list)
}

// nextInOrder reports whether e can follow a key's version (0: before its creation), by the
// aggregate's rule (domain.EvolveKey): KeyCreated first, then each version one more.
func nextInOrder(version int, e domain.Event) bool {
	if (version == 0) != (e.Type == domain.TypeKeyCreated) {
		return false
	}
	return e.Version == version+1
}

// versionAt is the key's version as of stream sequence seq, one of its messages: that
// event's version, or, when the message there is not an event, the version its history has
// reached by then. No message of the key at seq is domain.ErrKeyNotFound.
func (s *server) versionAt(r *http.Request, projectID, keyID string, seq uint64) (int, error) {
	at, _, err := s.d.Store.LoadKeyPage(r.Context(), projectID, keyID, seq-1, 1)
	if err != nil {
		return 0, err
	}
	if len(at) == 0 || at[0].Seq != seq {
		return 0, domain.ErrKeyNotFound
	}
	if at[0].Err == nil {
		return at[0].Event.Version, nil
	}
	version := 0
	for after := uint64(0); after < seq; {
		page, more, err := s.d.Store.LoadKeyPage(r.Context(), projectID, keyID, after, historyPageLimit)
		if err != nil {
			return 0, err
		}
		for _, rec := range page {
			if rec.Seq > seq {
				break
			}
			if rec.Err == nil && nextInOrder(version, rec.Event) {
				version = rec.Event.Version
			}
			after = rec.Seq
		}
		if !more || len(page) == 0 {
			break
		}
	}
	if version == 0 {
		return 0, domain.ErrKeyNotFound
	}
	return version, nil
}
