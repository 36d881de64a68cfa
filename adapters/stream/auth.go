package stream

// The embedded server's users. Without them any local process could connect to the port in
// nats.url and purge the stream (orders never decided, lost without a line in any log) or inject
// forged orders. The embedded server has two users, their passwords generated on first start into
// DataDir/nats-auth.json (mode 0600, readable by the service's user alone):
//
//   - the service ("commissioner"): everything; serve, publish, load and demo on the same data
//     directory connect as it (Connect reads the file);
//   - a publisher ("publisher"): may only publish order events (<subjects prefix>.*.*) and read
//     the stream's acks on its _INBOX — for other programs that feed the embedded server.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
)

// AuthFile is the file in DataDir holding the embedded server's users and passwords.
const AuthFile = "nats-auth.json"

// EmbeddedUser is one user of the embedded server.
type EmbeddedUser struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// EmbeddedAuth are the embedded server's users.
type EmbeddedAuth struct {
	Service   EmbeddedUser `json:"service"`
	Publisher EmbeddedUser `json:"publisher"`
}

// ReadEmbeddedAuth reads the embedded server's users from dir (its DataDir).
func ReadEmbeddedAuth(dir string) (EmbeddedAuth, error) {
	var a EmbeddedAuth
	path := filepath.Join(dir, AuthFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(data, &a); err != nil || a.Service.User == "" || a.Service.Password == "" || a.Publisher.Password == "" {
		return a, fmt.Errorf("%s: not the embedded server's users (%v)", path, err)
	}
	return a, nil
}

// embeddedAuth reads the users from dir, making them (mode 0600) when there are none.
func embeddedAuth(dir string) (EmbeddedAuth, error) {
	a, err := ReadEmbeddedAuth(dir)
	if !errors.Is(err, os.ErrNotExist) {
		return a, err
	}
	a = EmbeddedAuth{Service: EmbeddedUser{User: "commissioner", Password: randomSecret()},
		Publisher: EmbeddedUser{User: "publisher", Password: randomSecret()}}
	data, _ := json.MarshalIndent(a, "", "  ")
	f, err := os.OpenFile(filepath.Join(dir, AuthFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return ReadEmbeddedAuth(dir) // another process made it meanwhile
	}
	if err != nil {
		return a, err
	}
	_, werr := f.Write(append(data, '\n'))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return a, fmt.Errorf("writing %s: %w", AuthFile, err)
	}
	return a, nil
}

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// users are the embedded server's users with their permissions.
func (a EmbeddedAuth) users(cfg Config) []*server.User {
	prefix, _ := subjectPrefix(cfg.Subjects) // cfg is complete: valid
	return []*server.User{
		{Username: a.Service.User, Password: a.Service.Password},
		{Username: a.Publisher.User, Password: a.Publisher.Password, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{prefix + ".*.*"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
	}
}
