package store

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	for _, want := range []time.Time{
		time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC),
		time.Date(2025, 3, 10, 12, 0, 0, 500_000_000, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 123_456_000, time.UTC),
		time.Date(2025, 1, 2, 3, 4, 5, 1_000, time.UTC),
	} {
		text := want.Format(sqliteTimeLayout)
		var got time.Time
		if err := parseTime(text, &got); err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseTime(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
	var got time.Time
	if err := parseTime("2025-03-10 14:00:00+02:00", &got); err != nil || !got.Equal(time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("parseTime(+02:00) = %v, %v; want 12:00 UTC", got, err)
	}
	for _, bad := range []string{"", "2025-03-10", "2025-13-10 12:00:00x00:00", "2025-03-10 12:00:00.+00:00"} {
		if err := parseTime(bad, &got); err == nil {
			t.Errorf("parseTime(%q) = %v, want an error", bad, got)
		}
	}
}
