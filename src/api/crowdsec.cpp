// CrowdSec's Local API decision routes for unmodified bouncers (../shared/CROWDSEC.md,
// docs/CROWDSEC.md): GET /v1/decisions/stream and GET /v1/decisions, authenticated by
// X-Api-Key against --bouncer-key/--bouncer-key-file. Bodies are LAPI's: compact JSON,
// `null` for an empty list, errors as {"message":...}, 403 {"message":"access forbidden"}
// for a missing or wrong key. Both are slow routes (sp-api-slow); a full answer is then
// streamed in pieces from an O(1) snapshot of the journal, so no whole body is held.
#include "api/json_out.hpp"
#include "api/routes.hpp"
#include "decisions/journal.hpp"

namespace sp::api {

namespace {

Response lapiMessage(int status, std::string_view text) {
    Response r;
    r.status = status;
    r.body = R"({"message":)";
    core::appendJsonString(r.body, text);
    r.body.push_back('}');
    return r;
}

// What both /v1 routes check first, as LAPI answers it: the bouncer key (403), the journal
// (503), HEAD (200 without a body, the key's cursor unmoved). Sets `key` to the key's index
// and returns nullopt when the request goes on.
std::optional<Response> lapiGate(const ApiKeys* keys, const decisions::Journal* journal,
                                 const Request& r, std::size_t& key) {
    auto found = keys == nullptr || r.api_key.empty() ? std::nullopt : keys->find(r.api_key);
    if (!found) {
        return lapiMessage(403, "access forbidden");
    }
    if (journal == nullptr) {
        return lapiMessage(503, "decision stream is not running");
    }
    if (r.method == "HEAD") {
        return json(200, {});
    }
    key = *found;
    return std::nullopt;
}

} // namespace

Response Routes::decisionsStream(const Request& r, std::string_view) {
    std::size_t key = 0;
    if (auto early = lapiGate(options_.bouncer_keys.get(), options_.decisions.get(), r, key)) {
        return std::move(*early);
    }
    std::string error;
    auto filter = decisions::Filter::parse(r.query, true, &error);
    if (!filter) {
        return lapiMessage(500, error); // LAPI's stream answers a filter error 500
    }
    auto startup = r.param("startup");
    const bool is_startup = startup && *startup == "true";
    auto answer = is_startup ? options_.decisions->startup(key) : options_.decisions->poll(key);
    Response res;
    if (answer.full) {
        res.stream = decisions::streamBody(std::move(answer), std::move(*filter), is_startup);
    } else {
        res.body = decisions::renderStream(answer, *filter, false);
    }
    return res;
}

Response Routes::decisionsList(const Request& r, std::string_view) {
    std::size_t key = 0; // unused: a list moves no cursor
    if (auto early = lapiGate(options_.bouncer_keys.get(), options_.decisions.get(), r, key)) {
        return std::move(*early);
    }
    std::string error;
    auto filter = decisions::Filter::parse(r.query, false, &error);
    if (!filter) {
        return lapiMessage(400, error);
    }
    return json(200, decisions::renderList(options_.decisions->current(), *filter,
                                           options_.decisions->now()));
}

} // namespace sp::api
