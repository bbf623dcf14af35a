// The list routes, /ip-addresses (and /ip-addresses/ipset) and /numbers, in their JSON,
// plain, ipset, nft and CSV forms. A full list (no ?limit) or an export takes a slot of
// the ListBudget for as long as it is being answered.
#include "api/exports.hpp"
#include "api/json_out.hpp"
#include "api/list.hpp"
#include "api/routes.hpp"

namespace sp::api {

namespace {

Response tooManyLists() {
    Response r = message(503, "message", "Too many full lists at once; retry shortly");
    r.headers.emplace_back("Retry-After", "1");
    return r;
}

} // namespace

std::optional<std::shared_ptr<void>> Routes::listSlot(const ListQuery& q, bool json) {
    if (q.limit && json) {
        return std::shared_ptr<void>{}; // a page: no slot needed
    }
    auto slot = lists_.tryAcquire();
    if (!slot) {
        return std::nullopt;
    }
    return slot;
}

Response Routes::ipAddresses(const Request& r, std::string_view) {
    return listIps(r, r.param("format").value_or("json"));
}

Response Routes::ipset(const Request& r, std::string_view) {
    return listIps(r, "ipset");
}

Response Routes::listIps(const Request& r, const std::string& format) {
    auto now = clock_.now();
    ListQuery q;
    std::string set = r.param("set").value_or("sentrypeer");
    std::string table = r.param("table").value_or("sentrypeer");
    if (!parseListQuery(r, now, q) || !validSetName(set) || !validSetName(table) ||
        (format != "json" && format != "plain" && format != "ipset" && format != "nft")) {
        return invalid();
    }
    auto slot = listSlot(q, format == "json");
    if (!slot) {
        return tooManyLists();
    }
    // Firewall formats list only what the blocking policy blocks; JSON lists what is known.
    auto page = std::make_shared<Page>(
        listIndex(index_, true, q, format == "json" ? nullptr : policy_.get()));
    page->slot = std::move(*slot);
    if (format == "json") {
        if (page->entries.empty()) {
            return message(404, "message", "No bad actors found");
        }
        return jsonList(std::move(page), "ip_addresses_total", "ip_addresses", "ip_address");
    }
    if (format == "plain") {
        return plainList(std::move(page));
    }
    if (format == "ipset") {
        return ipsetExport(std::move(page), set, options_.block_window, now);
    }
    return nftExport(*page, table, set, options_.block_window, now);
}

Response Routes::numbers(const Request& r, std::string_view) {
    ListQuery q;
    std::string format = r.param("format").value_or("json");
    if (!parseListQuery(r, clock_.now(), q) ||
        (format != "json" && format != "csv" && format != "plain")) {
        return invalid();
    }
    auto slot = listSlot(q, format == "json");
    if (!slot) {
        return tooManyLists();
    }
    auto page = std::make_shared<Page>(listIndex(index_, false, q));
    page->slot = std::move(*slot);
    if (format == "json") {
        if (page->entries.empty()) {
            return message(404, "message", "No phone numbers found");
        }
        return jsonList(std::move(page), "called_numbers_total", "called_numbers", "called_number");
    }
    if (format == "csv") {
        return csvExport(std::move(page));
    }
    return plainList(std::move(page));
}

} // namespace sp::api
