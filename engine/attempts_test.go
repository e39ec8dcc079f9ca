package engine

import "testing"

// TestAttemptTable drives both kinds of table (a slice by map, a map by
// map) through several attempts per map, the rare case that uses extra.
func TestAttemptTable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mapCount uint32
	}{
		{"dense", 10},
		{"sparse", denseMapsMax + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newAttemptTable(tc.mapCount)
			if (tab.dense != nil) != (tc.name == "dense") {
				t.Fatalf("mapCount %d: dense %v", tc.mapCount, tab.dense != nil)
			}
			maps := []uint32{0, 3, tc.mapCount - 1}
			for _, m := range maps {
				if st := tab.get(m, 0); st != (attemptState{}) {
					t.Fatalf("map %d: untouched attempt is %+v", m, st)
				}
				for a := range uint32(4) {
					tab.set(m, a, attemptState{bytes: uint64(100*m + a), next: a + 1})
				}
			}
			// Each map's attempts are its own, the first inline, the rest
			// in extra.
			for _, m := range maps {
				for a := range uint32(4) {
					if st := tab.get(m, a); st.bytes != uint64(100*m+a) || st.next != a+1 || st.state != attemptOpen {
						t.Errorf("map %d attempt %d: %+v", m, a, st)
					}
				}
				if _, ok := tab.committedAttempt(m); ok {
					t.Errorf("map %d: a committed attempt before any commit", m)
				}
			}
			if len(tab.extra) != len(maps) {
				t.Errorf("extra holds %d maps' attempts, want %d", len(tab.extra), len(maps))
			}
			// Committing attempt 2 of map 3 closes its others, and no other
			// map's.
			st := tab.get(3, 2)
			st.state = attemptCommitted
			tab.set(3, 2, st)
			tab.closeOthers(3, 2)
			if a, ok := tab.committedAttempt(3); !ok || a != 2 {
				t.Errorf("map 3: committed attempt %d, %v; want 2", a, ok)
			}
			for a := range uint32(4) {
				want := attemptClosed
				if a == 2 {
					want = attemptCommitted
				}
				if got := tab.get(3, a).state; got != want {
					t.Errorf("map 3 attempt %d: state %d, want %d", a, got, want)
				}
				if got := tab.get(0, a).state; got != attemptOpen {
					t.Errorf("map 0 attempt %d: state %d after map 3's commit", a, got)
				}
			}
			tab.setCommitting(0, true)
			if !tab.committing(0) || tab.committing(3) {
				t.Errorf("committing: map 0 %v, map 3 %v", tab.committing(0), tab.committing(3))
			}
		})
	}
}
