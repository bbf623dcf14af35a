// The API's only reads of store::Index's maps (lists and /stats totals), in one place so
// that the index's access (lock, snapshot) can change here alone. Any thread.
#include <algorithm>

#include "api/list.hpp"

namespace sp::api {

Page listIndex(const store::Index& index, bool ips, const ListQuery& q,
               const block::Policy* blocking) {
    Page page;
    page.snapshot = index.snapshot();
    const store::KeyMap& map = ips ? page.snapshot->by_ip : page.snapshot->by_number;
    const bool local = q.origin != store::OriginFilter::Peer;
    const bool peer = q.origin != store::OriginFilter::Local;
    // With a limit the page is a heap of the best `limit` entries seen so far (its top is
    // the one that would be listed last); without, every selected entry.
    const std::size_t limit = q.limit.value_or(0);
    page.entries.reserve(limit > 0 ? std::min(limit + 1, map.size()) : map.size());
    auto worse = [](const Entry& a, const Entry& b) { return Page::before(a, b); };
    std::size_t matched = 0;
    for (const auto& [key, seen] : map) {
        if (q.since && seen.last < *q.since) {
            continue;
        }
        if (!q.prefix.empty() && key.compare(0, q.prefix.size(), q.prefix) != 0) {
            continue;
        }
        if (q.after &&
            (seen.last > q.after->last || (seen.last == q.after->last && key <= q.after->key))) {
            continue; // not after the cursor in list order
        }
        const std::uint64_t count = store::countOf(seen, q.origin);
        if (count == 0) {
            continue; // no event of the asked origin
        }
        if (blocking != nullptr &&
            !blocking->shouldBlock(key,
                                   block::Evidence{local ? seen.local : 0, peer ? seen.peer : 0,
                                                   peer ? seen.reporters : 0})) {
            continue;
        }
        Entry e{seen.last, seen.first, count, key.data(), key.size()};
        ++matched;
        if (limit == 0) {
            page.entries.pushBack(e);
            continue;
        }
        if (page.entries.size() == limit) {
            if (!Page::before(e, page.entries[0])) {
                continue; // not among the first `limit`
            }
            std::pop_heap(page.entries.begin(), page.entries.end(), worse);
            page.entries.resize(limit - 1);
        }
        page.entries.pushBack(e);
        std::push_heap(page.entries.begin(), page.entries.end(), worse);
    }
    std::sort(page.entries.begin(), page.entries.end(), Page::before);
    if (limit > 0 && matched > limit) { // more remain after this page
        page.next = cursorText(page.entries.back().last, Page::key(page.entries.back()));
    }
    return page;
}

IndexTotals indexTotals(const store::Index& index) {
    return index.read([](const store::IndexSnapshot& m) {
        return IndexTotals{m.events, m.by_ip.size(), m.by_number.size()};
    });
}

} // namespace sp::api
