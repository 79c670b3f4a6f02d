package amiproto

// gaveUpGeneration is how many given-up ActionIDs one generation of a
// gaveUpSet holds.
const gaveUpGeneration = 4096

// gaveUpSet holds the ActionIDs whose caller stopped waiting, so that
// their late answers are swallowed instead of reported. It is bounded
// (requests that are never answered must not grow it forever) without
// forgetting recent entries: it keeps two generations, and when the
// current one is full the older is dropped and the current becomes the
// older. An ID is thus remembered for at least gaveUpGeneration later
// ones. The value is true once the ID's answer started a list.
type gaveUpSet struct {
	cur, old map[string]bool
	lists    int // IDs held whose list started
}

// get reports whether id was given up, and whether its list started.
func (g *gaveUpSet) get(id string) (listing, ok bool) {
	if listing, ok = g.cur[id]; ok {
		return listing, true
	}
	listing, ok = g.old[id]
	return listing, ok
}

// set records id, or updates it in the generation that holds it.
func (g *gaveUpSet) set(id string, listing bool) {
	if was, ok := g.old[id]; ok {
		g.count(was, listing)
		g.old[id] = listing
		return
	}
	was, ok := g.cur[id]
	if !ok && (g.cur == nil || len(g.cur) >= gaveUpGeneration) {
		for _, l := range g.old {
			g.count(l, false)
		}
		g.old, g.cur = g.cur, make(map[string]bool)
	}
	g.count(was, listing)
	g.cur[id] = listing
}

// count keeps lists when an ID's listing changes from was to is.
func (g *gaveUpSet) count(was, is bool) {
	switch {
	case is && !was:
		g.lists++
	case was && !is:
		g.lists--
	}
}

// del forgets id.
func (g *gaveUpSet) del(id string) {
	l, ok := g.cur[id]
	if !ok {
		l = g.old[id]
	}
	g.count(l, false)
	delete(g.cur, id)
	delete(g.old, id)
}

// len returns how many IDs are held.
func (g *gaveUpSet) len() int { return len(g.cur) + len(g.old) }
