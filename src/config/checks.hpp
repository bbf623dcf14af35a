#pragma once
// Value checks of the option table (config.cpp): each returns "" when the value is good,
// else the reason, which parse() prefixes with where the value came from (flag, variable,
// file:line:key). normaliseBool throws CLI::ValidationError instead (a CLI11 transform).

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace sp::config {

std::string normaliseBool(const std::string& v);
std::string checkDuration(const std::string& v);
std::string checkHostPort(const std::string& v);
// A decimal number in [0, max], no sign (CLI11 would turn "-1" into 2^64-1).
CLI::Validator unsignedUpTo(std::uint64_t max, const std::string& what);
std::string checkBootstrap(const std::string& b);
std::string checkCidr(const std::string& v);
// A bouncer/API key (core::validApiKey); the message never repeats the key.
std::string checkApiKey(const std::string& v);
// A dialled number: 1-64 of 0-9 * # after an optional leading '+', with visual separators
// (space - . ( ) /) allowed (the API normalises it: src/api/lookup_keys.hpp).
std::string checkPhoneNumber(const std::string& v);
std::string checkUrl(const std::string& url);
// An RCP1 identity (pkId): 40 hex digits, any case (normalised to lower case by parse()).
std::string checkPkId(const std::string& v);
std::string checkCredit(const std::string& v);
// An nftables table name: a letter, then letters, digits, '_' or '-' (at most 64).
std::string checkNftTable(const std::string& v);

} // namespace sp::config
