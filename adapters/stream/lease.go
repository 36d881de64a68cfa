package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The owners bucket (Config.OwnersBucket) holds two kinds of keys, all expiring LeaseTTL after
// their last write (the bucket's TTL):
//
//	p.<n>        partition n's lease: created with kv.Create by the process that takes it, its
//	             value that process's member id; renewed with kv.Update at the revision it holds;
//	             deleted at that revision when given up. The revision kv.Create returns is the
//	             ownership's epoch: revisions grow over the whole bucket, so every later
//	             acquisition of any partition has a larger epoch.
//	m.<member>   a live process; its value says which (host, pid, start). Each process counts
//	             the members to take its fair share, ceil(partitions / members).
//
// Nothing else decides ownership: a lease is held exactly while its key holds the owner's
// revision, and an owner stops working on a partition as soon as a renewal fails or the time
// it last renewed is LeaseTTL (less a margin) ago.
const (
	leaseKeyPrefix  = "p."
	memberKeyPrefix = "m."
)

func leaseKey(n int) string { return leaseKeyPrefix + strconv.Itoa(n) }

// ensureOwnersBucket opens the owners bucket, creating it with cfg.LeaseTTL. An existing bucket
// with another TTL is refused while any lease or member in it is live (processes with different
// TTLs could both believe they own a partition); an idle one is updated to cfg.LeaseTTL.
func ensureOwnersBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	name := cfg.OwnersBucket()
	kv, err := js.KeyValue(ctx, name)
	switch {
	case err == nil:
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading owners bucket %s: %w", name, err)
		}
		if st.TTL() == cfg.LeaseTTL {
			break
		}
		live, err := listKeys(ctx, kv)
		if err != nil {
			return nil, fmt.Errorf("reading owners bucket %s: %w", name, err)
		}
		if len(live) > 0 {
			return nil, fmt.Errorf("owners bucket %s has lease TTL %v and nats.lease_ttl is %v, with %d leases or members live: "+
				"every process on one bucket must use the same TTL; stop them all, then start with the new TTL (an idle bucket is updated)",
				name, st.TTL(), cfg.LeaseTTL, len(live))
		}
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("opening owners bucket %s: %w", name, err)
	}
	kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: fmt.Sprintf("Commissioner: leases of the %d partitions of stream %s, and the processes sharing them", cfg.Partitions, cfg.Stream),
		History:     1,
		TTL:         cfg.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating owners bucket %s: %w", name, err)
	}
	return kv, nil
}

// epochBase makes epochs grow across owners buckets, not only within one: a lease's epoch is its
// KV revision plus the bucket's creation time in seconds shifted left by 30 bits. The store keeps
// the highest epoch each partition was claimed with and refuses lower ones, so if the bucket is
// ever deleted and made again (its revisions restart at 1 — a new embedded server's data
// directory, say), the new owners' epochs must still be higher than every old one. 2^30 revisions
// are a bucket's room: about eight years of renewals at the defaults.
func epochBase(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading owners bucket %s: %w", kv.Bucket(), err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil || bs.StreamInfo().Created.Unix() <= 0 {
		return 0, fmt.Errorf("owners bucket %s: its creation time cannot be read", kv.Bucket())
	}
	return uint64(bs.StreamInfo().Created.Unix()) << 30, nil
}

// listKeys returns the bucket's live keys (deleted and expired ones excluded), each once (a
// key written while it is listed can be reported twice).
func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	l, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Stop()
	seen := map[string]bool{}
	var keys []string
	for k := range l.Keys() {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys, ctx.Err()
}

// ownersView is one reading of the bucket.
type ownersView struct {
	members int          // live members, this process included
	held    map[int]bool // partitions with a live lease
}

func readOwners(ctx context.Context, kv jetstream.KeyValue, self string, partitions int) (ownersView, error) {
	keys, err := listKeys(ctx, kv)
	if err != nil {
		return ownersView{}, err
	}
	v := ownersView{held: map[int]bool{}}
	selfSeen := false
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, memberKeyPrefix):
			v.members++
			selfSeen = selfSeen || k == memberKeyPrefix+self
		case strings.HasPrefix(k, leaseKeyPrefix):
			if n, err := strconv.Atoi(k[len(leaseKeyPrefix):]); err == nil && n >= 0 && n < partitions {
				v.held[n] = true
			}
		}
	}
	if !selfSeen {
		v.members++
	}
	return v, nil
}

// fairShare is how many partitions each of members processes may own: ceil(partitions/members).
func fairShare(partitions, members int) int {
	return (partitions + max(members, 1) - 1) / max(members, 1)
}

// rendezvous is member's score for partition n (highest random weight hashing): each process
// prefers the free partitions it scores highest and gives up those it scores lowest, so
// processes taking partitions at once mostly want different ones.
func rendezvous(member string, n int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(n)))
	return h.Sum64()
}

// newMemberID is a random id for one Consumer's lifetime.
func newMemberID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// memberValue describes this process in its member key, for whoever looks at the bucket.
func memberValue(id string) []byte {
	host, _ := os.Hostname()
	b, _ := json.Marshal(struct {
		ID      string    `json:"id"`
		Host    string    `json:"host"`
		PID     int       `json:"pid"`
		Started time.Time `json:"started"`
	}{id, host, os.Getpid(), time.Now().UTC().Truncate(time.Second)})
	return b
}
