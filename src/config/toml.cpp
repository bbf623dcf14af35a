#include "config/toml.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string_view>

namespace sp::config {

// A value as a TOML basic string that TomlReader turns back into the same bytes.
std::string tomlString(const std::string& s) {
    std::string out = "\"";
    for (char ch : s) {
        auto u = static_cast<unsigned char>(ch);
        switch (ch) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\b':
            out += "\\b";
            break;
        case '\t':
            out += "\\t";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\f':
            out += "\\f";
            break;
        case '\r':
            out += "\\r";
            break;
        default:
            if (u < 0x20 || u == 0x7f) {
                static const char* const hex = "0123456789ABCDEF";
                out += "\\u00";
                out.push_back(hex[u >> 4]);
                out.push_back(hex[u & 0xf]);
            } else {
                out.push_back(ch);
            }
        }
    }
    return out + "\"";
}

TomlReader::TomlReader(std::istream& in) {
    text_.resize(kMaxConfigBytes + 1);
    in.read(text_.data(), static_cast<std::streamsize>(text_.size()));
    text_.resize(static_cast<std::size_t>(in.gcount()));
    if (text_.size() > kMaxConfigBytes) {
        throw TomlError(0, "larger than 1 MiB");
    }
    if (text_.rfind("\xEF\xBB\xBF", 0) == 0) {
        pos_ = 3; // UTF-8 byte order mark
    }
}

std::vector<TomlReader::Item> TomlReader::items() {
    std::vector<Item> out;
    while (true) {
        skipBlank(false);
        if (atEnd()) {
            return out;
        }
        if (peek() == '\n' || peek() == '\r') {
            newline();
            continue;
        }
        if (peek() == '[') {
            fail("tables ([section]) are not supported: put every key at the top level");
        }
        Item item;
        item.line = line_;
        item.key = key();
        skipBlank(false);
        if (atEnd() || peek() != '=') {
            fail("expected 'key = value', got '" + item.key + restOfLine() + "'");
        }
        ++pos_;
        skipBlank(false);
        if (!atEnd() && peek() == '[') {
            item.array = true;
            item.values = array(item.key);
        } else {
            item.values.push_back(scalar(item.key));
        }
        skipBlank(false);
        if (!atEnd() && peek() != '\n' && peek() != '\r') {
            fail(item.key + ": unexpected text after the value: '" + restOfLine() + "'");
        }
        out.push_back(std::move(item));
    }
}

// Up to 40 bytes of the rest of the line, control bytes as '?' (for error messages).
std::string TomlReader::restOfLine() const {
    auto end = std::min(text_.find_first_of("\r\n", pos_), text_.size());
    std::string rest = text_.substr(pos_, std::min<std::size_t>(end - pos_, 40));
    for (char& ch : rest) {
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
            ch = '?';
        }
    }
    return rest;
}

// Spaces, tabs and a comment up to the end of the line; with `newlines`, line ends too.
void TomlReader::skipBlank(bool newlines) {
    while (!atEnd()) {
        char ch = peek();
        if (ch == ' ' || ch == '\t') {
            ++pos_;
        } else if (ch == '#') {
            while (!atEnd() && peek() != '\n' && peek() != '\r') {
                ++pos_;
            }
        } else if (newlines && (ch == '\n' || ch == '\r')) {
            newline();
        } else {
            return;
        }
    }
}

void TomlReader::newline() {
    if (peek() == '\r') {
        ++pos_;
        if (atEnd() || peek() != '\n') {
            fail("a carriage return not followed by a line feed");
        }
    }
    ++pos_;
    ++line_;
}

std::string TomlReader::key() {
    std::size_t start = pos_;
    while (!atEnd() && (std::isalnum(static_cast<unsigned char>(peek())) != 0 || peek() == '_' ||
                        peek() == '-')) {
        ++pos_;
    }
    if (pos_ == start) {
        fail("expected a key (letters, digits, '_', '-'), got '" + restOfLine() + "'");
    }
    return text_.substr(start, pos_ - start);
}

std::vector<std::string> TomlReader::array(const std::string& key) {
    ++pos_; // '['
    std::vector<std::string> values;
    while (true) {
        skipBlank(true);
        if (atEnd()) {
            fail(key + ": unterminated array");
        }
        if (peek() == ']') {
            ++pos_;
            return values;
        }
        if (peek() == '[' || peek() == '{') {
            fail(key + ": nested arrays and tables are not supported");
        }
        values.push_back(scalar(key));
        skipBlank(true);
        if (atEnd()) {
            fail(key + ": unterminated array");
        }
        if (peek() == ',') {
            ++pos_;
        } else if (peek() != ']') {
            fail(key + ": expected ',' or ']' in the array");
        }
    }
}

std::string TomlReader::scalar(const std::string& key) {
    if (atEnd() || peek() == '\n' || peek() == '\r') {
        fail(key + ": missing value");
    }
    if (peek() == '"' || peek() == '\'') {
        return quotedString(key);
    }
    std::size_t start = pos_;
    while (!atEnd() && (std::isalnum(static_cast<unsigned char>(peek())) != 0 ||
                        std::string_view("+-_.:").find(peek()) != std::string_view::npos)) {
        ++pos_;
    }
    std::string word = text_.substr(start, pos_ - start);
    if (word == "true" || word == "false") {
        return word;
    }
    // An integer: optional sign, digits, single underscores between digits.
    std::string digits;
    std::size_t i = 0;
    if (!word.empty() && (word[0] == '+' || word[0] == '-')) {
        if (word[0] == '-') {
            digits.push_back('-');
        }
        i = 1;
    }
    bool ok = i < word.size();
    auto is_digit = [&word](std::size_t at) { return word[at] >= '0' && word[at] <= '9'; };
    for (; ok && i < word.size(); ++i) {
        if (is_digit(i)) {
            digits.push_back(word[i]);
        } else if (word[i] != '_' || i == 0 || i + 1 >= word.size() || !is_digit(i - 1) ||
                   !is_digit(i + 1)) {
            ok = false;
        }
    }
    if (!ok) {
        pos_ = start;
        fail(key + ": '" + restOfLine() + "' is not a value (strings are quoted: key = \"text\")");
    }
    return digits;
}

// A string on one line: '...' taken literally, "..." with TOML's escapes.
std::string TomlReader::quotedString(const std::string& key) {
    const char quote = peek();
    const bool escapes = quote == '"';
    if (text_.compare(pos_, 3, std::string(3, quote)) == 0) {
        fail(key + ": multi-line strings are not supported");
    }
    ++pos_;
    std::string out;
    while (true) {
        if (atEnd() || peek() == '\n' || peek() == '\r') {
            fail(key + ": unterminated string");
        }
        char ch = text_[pos_++];
        if (ch == quote) {
            return out;
        }
        if (escapes && ch == '\\') {
            escape(key, out);
            continue;
        }
        if ((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') || ch == 0x7f) {
            fail(key + (escapes ? ": control character in a string (escape it)"
                                : ": control character in a string"));
        }
        out.push_back(ch);
    }
}

// The escape after a backslash in a "..." string, appended to out.
void TomlReader::escape(const std::string& key, std::string& out) {
    if (atEnd()) {
        fail(key + ": unterminated string");
    }
    char e = text_[pos_++];
    switch (e) {
    case '"':
        out.push_back('"');
        break;
    case '\\':
        out.push_back('\\');
        break;
    case 'b':
        out.push_back('\b');
        break;
    case 't':
        out.push_back('\t');
        break;
    case 'n':
        out.push_back('\n');
        break;
    case 'f':
        out.push_back('\f');
        break;
    case 'r':
        out.push_back('\r');
        break;
    case 'u':
        unicodeEscape(key, 4, out);
        break;
    case 'U':
        unicodeEscape(key, 8, out);
        break;
    default:
        fail(key + ": unknown escape in a string");
    }
}

void TomlReader::unicodeEscape(const std::string& key, std::size_t n, std::string& out) {
    if (pos_ + n > text_.size()) {
        fail(key + ": short \\u escape");
    }
    std::uint32_t cp = 0;
    for (std::size_t i = 0; i < n; ++i) {
        char h = text_[pos_++];
        int v = -1;
        if (h >= '0' && h <= '9') {
            v = h - '0';
        } else if (h >= 'a' && h <= 'f') {
            v = h - 'a' + 10;
        } else if (h >= 'A' && h <= 'F') {
            v = h - 'A' + 10;
        }
        if (v < 0) {
            fail(key + ": bad \\u escape");
        }
        cp = cp * 16 + static_cast<std::uint32_t>(v);
        if (cp > 0x10FFFF) {
            fail(key + ": \\u escape is not a Unicode scalar value");
        }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        fail(key + ": \\u escape is not a Unicode scalar value");
    }
    auto byte = [&out](std::uint32_t b) { out.push_back(static_cast<char>(b)); };
    if (cp < 0x80) {
        byte(cp);
    } else if (cp < 0x800) {
        byte(0xC0 | (cp >> 6));
        byte(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        byte(0xE0 | (cp >> 12));
        byte(0x80 | ((cp >> 6) & 0x3F));
        byte(0x80 | (cp & 0x3F));
    } else {
        byte(0xF0 | (cp >> 18));
        byte(0x80 | ((cp >> 12) & 0x3F));
        byte(0x80 | ((cp >> 6) & 0x3F));
        byte(0x80 | (cp & 0x3F));
    }
}

} // namespace sp::config
