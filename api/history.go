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
func (s *server) keyEvents(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	id, after, limit, err := decodeHistory(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	records, more, err := s.d.Store.LoadKeyPage(r.Context(), caller.ProjectID, id, after, limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	list := eventList{IsPaginated: true, Items: make([]json.RawMessage, 0, len(records))}
	for _, rec := range records {
		if rec.Err != nil {
			continue
		}
		doc, err := domain.MarshalEvent(rec.Event)
		if err != nil {
			writeError(w, r, fmt.Errorf("encode event %d of key %s: %w", rec.Seq, id, err))
			return
		}
		list.Items = append(list.Items, doc)
	}
	if after == 0 && len(list.Items) == 0 && !more {
		writeError(w, r, domain.ErrKeyNotFound) // no events, or only garbage on its subjects
		return
	}
	if more {
		next := strconv.FormatUint(records[len(records)-1].Seq, 10)
		list.Pagination.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, list)
}
