#include "api/list.hpp"

#include "api/json_out.hpp"

namespace sp::api {

namespace {
constexpr std::size_t kChunkBytes = 32UL * 1024; // streamed lists: bytes per chunk
} // namespace

BodyStream streamEntries(std::shared_ptr<Page> page, std::string header, ItemWriter item,
                         std::string footer) {
    return [page = std::move(page), header = std::move(header), item = std::move(item),
            footer = std::move(footer), i = std::size_t{0},
            started = false](std::string& chunk) mutable {
        if (!started) {
            chunk.reserve(kChunkBytes + 512);
            chunk.append(header);
            started = true;
        }
        const std::size_t n = page->entries.size();
        for (; i < n && chunk.size() < kChunkBytes; ++i) {
            item(chunk, *page, page->entries[i], i);
        }
        if (i < n) {
            return true;
        }
        chunk.append(footer);
        return false;
    };
}

Response jsonList(std::shared_ptr<Page> page, const char* total_key, const char* list_key,
                  const char* item_key) {
    std::string header =
        JsonObject().num(total_key, page->entries.size()).raw(list_key, "[").open();
    std::string footer = "]";
    if (page->next) {
        std::string tail = ", ";
        core::appendJsonString(tail, "next_after");
        tail.append(": ");
        core::appendJsonString(tail, *page->next);
        footer += tail;
    }
    footer += "}";
    // Each item as JsonObject().str(item_key, key).str("seen_last", ...).str("seen_count",
    // ...).done() would write it, appended in place.
    std::string open = "{";
    core::appendJsonString(open, item_key);
    open.append(": ");
    Response r;
    r.stream = streamEntries(
        std::move(page), std::move(header),
        [open = std::move(open)](std::string& out, const Page& p, const Entry& e, std::size_t i) {
            if (i > 0) {
                out.append(", ");
            }
            out.append(open);
            core::appendJsonString(out, p.key(e));
            out.append(R"(, "seen_last": ")");
            appendTimestamp(out, e.last);
            out.append(R"(", "seen_count": ")");
            core::appendDecimal(out, e.count);
            out.append("\"}");
        },
        std::move(footer));
    return r;
}

Response textStream(std::shared_ptr<Page> page, std::string header, ItemWriter item,
                    std::string footer, std::string_view content_type) {
    Response r;
    r.content_type = content_type;
    r.stream =
        streamEntries(std::move(page), std::move(header), std::move(item), std::move(footer));
    return r;
}

Response plainList(std::shared_ptr<Page> page) {
    return textStream(
        std::move(page), "",
        [](std::string& out, const Page& p, const Entry& e, std::size_t) {
            out.append(p.key(e)).push_back('\n');
        },
        "", "text/plain; charset=utf-8");
}

} // namespace sp::api
