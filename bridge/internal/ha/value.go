package ha

import (
	"encoding/json"
	"fmt"
)

// Value is what the active writes with each renewal of its lease. The
// stream itself says what was published; the lease says only how far
// the holder may have gone.
type Value struct {
	// Epoch is the Nats-Msg-Id epoch the holder publishes under.
	Epoch int64 `json:"epoch"`
	// Limit is the highest Ami-Seq the holder may publish until its next
	// renewal: a new active that cannot prove where to continue reports
	// the numbers up to Limit+1 as a gap and starts above them, so that
	// it never reuses a number (and Nats-Msg-Id) the old one gave.
	Limit uint64 `json:"limit"`
	// Run is the first Ami-Seq of the numbering the holder continues: it
	// changes only when a new active cannot continue the old one's (a
	// gap, a new epoch), and a Mark holds only within its run.
	Run uint64 `json:"run,omitempty"`
	// Marks answers the marks the holder read: for each, the Ami-Seq of
	// the last event it numbered before the mark (see Mark).
	Marks []Answer `json:"marks,omitempty"`
	// Final is set by a holder that shut down and released the lease with
	// its acks settled: it will not contend, so a standby takes over at
	// once however recent its login.
	Final bool `json:"final,omitempty"`
}

// Answer is the holder's answer to one mark.
type Answer struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}

// Encode returns v as the lease's JSON payload.
func (v Value) Encode() []byte {
	data, _ := json.Marshal(v) // plain numbers: cannot fail
	return data
}

// DecodeValue reads a lease payload; an empty one is the zero Value.
func DecodeValue(data []byte) (Value, error) {
	var v Value
	if len(data) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("ha: lease value: %w", err)
	}
	return v, nil
}
