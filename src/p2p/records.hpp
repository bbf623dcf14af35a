#pragma once
// SentryPeer events as share-protocol records (src/share) and back. Pure and thread-safe.
//
// Record: id = the event UUID's 16 bytes, time = unix seconds, subject = source IP,
// attributes = the other SentryPeer fields (sip_message cut so that all attributes fit the
// protocol's 4 KiB). A received record is rebuilt as SentryPeer's JSON value and checked by
// the same decode() as a plaintext value: a verified signature says who sent it, not that its
// content is sane.

#include <cstdint>
#include <string_view>

#include "core/event.hpp"
#include "p2p/codec.hpp"
#include "share/share.hpp"

namespace sp::p2p {

// The record for a local event. False when the event cannot be one (no UUID, or a subject
// or field over the protocol's limits): then it is not shared.
bool toRecord(const core::Event& e, share::Record& out);

// The peer event for a delivered record: decode()'s checks, then reporter = the verified
// publisher. own_node_id and now as for decode().
Decoded fromDelivered(const share::Delivered& d, std::string_view own_node_id, core::TimePoint now);

} // namespace sp::p2p
