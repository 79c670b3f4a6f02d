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
	if _, ok := g.old[id]; ok {
		g.old[id] = listing
		return
	}
	if g.cur == nil || len(g.cur) >= gaveUpGeneration {
		if _, ok := g.cur[id]; !ok {
			g.old, g.cur = g.cur, make(map[string]bool)
		}
	}
	g.cur[id] = listing
}

// del forgets id.
func (g *gaveUpSet) del(id string) {
	delete(g.cur, id)
	delete(g.old, id)
}

// len returns how many IDs are held.
func (g *gaveUpSet) len() int { return len(g.cur) + len(g.old) }
