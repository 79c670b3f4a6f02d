package amitest

// StalledWriters returns how many session writers hold output back in a
// Stall right now: with one session, that its queued answer has not left.
func StalledWriters(s *Server) int { return int(s.faults.stalledWriters.Load()) }

// IgnoredInput returns how many actions half-open sessions have read and
// dropped unanswered.
func IgnoredInput(s *Server) int64 { return s.faults.ignoredInput.Load() }
