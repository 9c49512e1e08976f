package domain

import (
	"fmt"
	"time"
)

// ProjectSnapshot is a project's state as plain data.
type ProjectSnapshot struct {
	ID            string
	Name          string
	ServerKeyID   string
	ServerKeyHash string
	CreatedAt     time.Time
}

// CreateProject is the command to register a project with its secret server key.
type CreateProject struct {
	ProjectID     string
	Name          string
	ServerKeyID   string
	ServerKeyHash string
}

// MaxProjectNameChars bounds a project's name.
const MaxProjectNameChars = 256

// DecideCreateProject returns the ProjectCreated event, or a ValidationError.
func DecideCreateProject(c CreateProject, m Meta) (Event, error) {
	if err := validateText("name", c.Name, 1, 0, false); err != nil {
		return Event{}, err
	}
	if len([]rune(c.Name)) > MaxProjectNameChars {
		return Event{}, &ValidationError{fmt.Sprintf("name must be at most %d characters", MaxProjectNameChars)}
	}
	e := newEvent(m, c.ProjectID, "", "", "", 1, ProjectCreated{
		Name: c.Name, ServerKeyID: c.ServerKeyID, ServerKeyHash: c.ServerKeyHash,
	})
	d := e.Data.(ProjectCreated)
	d.CreatedAt = e.Time
	e.Data = d
	return e, nil
}

// ProjectFromEvent returns the project a ProjectCreated event describes.
func ProjectFromEvent(e Event) (ProjectSnapshot, error) {
	d, ok := e.Data.(ProjectCreated)
	if !ok {
		return ProjectSnapshot{}, fmt.Errorf("%w: %s is not a project creation", ErrInvalidEvent, e.Type)
	}
	return ProjectSnapshot{
		ID: e.ProjectID, Name: d.Name, ServerKeyID: d.ServerKeyID,
		ServerKeyHash: d.ServerKeyHash, CreatedAt: d.CreatedAt.UTC(),
	}, nil
}
