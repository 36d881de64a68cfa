package stream

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckVersion(t *testing.T) {
	for _, v := range []string{"2.10.0", "2.10.4", "2.11.0-beta.2", "2.15.2", "v2.12.1", "3.0.0"} {
		if err := checkVersion(v, "nats://x:4222"); err != nil {
			t.Errorf("checkVersion(%q): got %v, want nil", v, err)
		}
	}
	for _, v := range []string{"2.9.10", "2.9.25", "1.4.1", "", "nonsense"} {
		err := checkVersion(v, "nats://x:4222")
		if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), "2.10.0 or later") || !strings.Contains(err.Error(), "nats://x:4222") {
			t.Errorf("checkVersion(%q): got %v, want ErrServerTooOld naming the server and 2.10.0", v, err)
		}
		if v != "" && !strings.Contains(err.Error(), "nats-server "+v+" ") {
			t.Errorf("checkVersion(%q): got %v, want it to name the version found", v, err)
		}
	}
}

func TestFairShare(t *testing.T) {
	for _, tt := range []struct{ partitions, members, want int }{
		{8, 1, 8}, {8, 2, 4}, {8, 3, 3}, {8, 8, 1}, {8, 9, 1}, {1, 3, 1}, {8, 0, 8},
	} {
		if got := fairShare(tt.partitions, tt.members); got != tt.want {
			t.Errorf("fairShare(%d, %d): got %d, want %d", tt.partitions, tt.members, got, tt.want)
		}
	}
}
