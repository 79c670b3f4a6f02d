package config

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// secretsOf lists every secret c holds, resolved or not, for masking:
// NATS passwords and tokens (nats.* and nats.service.*), the secrets of every URL, each server's
// resolved secret, and the value of every secret_env variable, even one
// that was refused (a secret given twice is not resolved).
func secretsOf(c *Config, lookupEnv func(string) (string, bool)) []string {
	out := []string{string(c.NATS.Password), string(c.NATS.Token), string(c.NATS.Service.Password), string(c.NATS.Service.Token)}
	for _, u := range strings.Split(string(c.NATS.URL), ",") {
		out = append(out, userinfoSecret(u, true))
	}
	out = append(out, c.NATS.Embedded.Leafnodes.secrets()...)
	for _, s := range c.Servers {
		out = append(out, string(s.Secret), userinfoSecret(string(s.URL), false))
		if s.SecretEnv != "" {
			v, _ := lookupEnv(s.SecretEnv)
			out = append(out, v)
		}
	}
	return out
}

// minMasked is the shortest secret masked inside free text: masking every
// "a" would garble the message and protect nothing.
const minMasked = 3

// maskAll replaces every secret in s, as it is and in every escaped form a
// message could quote it in, the second line of defence behind checks that
// never quote one.
func maskAll(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) < minMasked {
			continue
		}
		for _, form := range escapedForms(sec) {
			s = strings.ReplaceAll(s, form, redacted)
		}
	}
	return s
}

// escapedForms returns sec as it is and as %q, strconv.QuoteToASCII, URL
// query, path and userinfo escaping, and JSON (with and without HTML
// escaping) spell it, without the quotes, longest first so that no form
// is left half-masked by a shorter one inside it.
func escapedForms(sec string) []string {
	unquote := func(q string) string { return q[1 : len(q)-1] }
	forms := []string{
		sec,
		unquote(strconv.Quote(sec)),
		unquote(strconv.QuoteToASCII(sec)),
		url.QueryEscape(sec),
		url.PathEscape(sec),
		strings.TrimPrefix(url.UserPassword("u", sec).String(), "u:"),
	}
	for _, html := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		_ = enc.Encode(sec) // a string always encodes
		forms = append(forms, unquote(strings.TrimSuffix(b.String(), "\n")))
	}
	slices.SortFunc(forms, func(a, b string) int {
		if d := len(b) - len(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(forms)
}
