package checkpointlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/commissioner/commissioner/engine/audit"
)

// Log is a checkpoint log open for appending.
type Log struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

var _ audit.CheckpointSink = (*Log)(nil)

// Open opens the log at path for appending, creating it (mode 0600, its directory 0700) when it
// does not exist.
func Open(path string) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint log %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint log: %w", err)
	}
	return &Log{path: path, f: f}, nil
}

// Path is the log's file.
func (l *Log) Path() string { return l.path }

// WriteCheckpoint appends one signed checkpoint and syncs it to disk.
func (l *Log) WriteCheckpoint(_ context.Context, _ *audit.Checkpoint, signed []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(audit.AppendLogRecord(nil, signed)); err != nil {
		return fmt.Errorf("appending to the checkpoint log %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("syncing the checkpoint log %s: %w", l.path, err)
	}
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// Read reads every checkpoint of the log at path.
func Read(path string) ([]audit.SignedCheckpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint log: %w", err)
	}
	defer f.Close()
	return audit.ReadLog(f, path)
}
