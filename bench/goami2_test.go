//go:build goami2

package bench

import (
	"fmt"

	"github.com/staskobzar/goami2"
)

// goami2 is measured only with -tags goami2, after
// `go get github.com/staskobzar/goami2@latest`: see README.md.
func init() {
	contenders = append(contenders, contender{
		name:      "goami2",
		parse:     parseGoami2,
		parseJSON: parseJSONGoami2,
	})
}

// parseGoami2 hands each packet to goami2.Parse, which takes a string: its
// client converts the bytes it read the same way.
func parseGoami2(capture []byte) (result, error) {
	var res result
	sc := newPacketScanner(capture)
	for sc.Scan() {
		if _, err := goami2.Parse(string(sc.Bytes())); err != nil {
			res.failed++
			continue
		}
		res.msgs++
	}
	if err := sc.Err(); err != nil {
		return res, fmt.Errorf("goami2: split: %w", err)
	}
	return res, nil
}

// parseJSONGoami2 is parseGoami2 plus (*goami2.Message).JSON, the library's
// own encoder (encoding/json over a map). The last JSON is copied into buf
// once, after the loop, for the sanity test.
func parseJSONGoami2(capture []byte, buf []byte) (result, []byte, error) {
	var res result
	var last string
	sc := newPacketScanner(capture)
	for sc.Scan() {
		m, err := goami2.Parse(string(sc.Bytes()))
		if err != nil {
			res.failed++
			continue
		}
		last = m.JSON()
		res.msgs++
		res.jsonBytes += len(last)
	}
	if err := sc.Err(); err != nil {
		return res, buf, fmt.Errorf("goami2: split: %w", err)
	}
	return res, append(buf[:0], last...), nil
}
