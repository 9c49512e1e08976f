package api

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// eventList is the response of GET /user-api-keys/{api_key_id}/events: the key's events as
// docs/events.md describes them, oldest first.
type eventList struct {
	IsPaginated bool              `json:"is_paginated"`
	Items       []json.RawMessage `json:"items"`
}

// keyEvents is GET /user-api-keys/{api_key_id}/events: the key's history, read from the event
// store (the source of truth, current without waiting for any projector), in the current
// schema version. Messages on the key's subjects that are not events are left out, as every
// reader leaves them out.
func (s *server) keyEvents(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	id, err := decodeGet(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	records, err := s.d.Store.LoadKey(r.Context(), caller.ProjectID, id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	list := eventList{IsPaginated: false, Items: make([]json.RawMessage, 0, len(records))}
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
	if len(list.Items) == 0 {
		writeError(w, r, domain.ErrKeyNotFound)
		return
	}
	writeJSON(w, http.StatusOK, list)
}
