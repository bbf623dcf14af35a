#pragma once
// Random v4 UUIDs (lowercase, 36 chars) and their validation.

#include <string>
#include <string_view>

namespace sp::core {

// A fresh random v4 UUID. Thread-safe (per-thread generator seeded from the OS).
std::string newUuid();

// True for the canonical 8-4-4-4-12 hexadecimal form (either case, any version).
bool isUuid(std::string_view s);

// A 64-bit random number from the same per-thread generator.
unsigned long long randomU64();

} // namespace sp::core
