#pragma once
// The config file's TOML: the subset a flat configuration needs, read exactly (escapes,
// comments, arrays over several lines) so that describe() output reads back byte for byte.

#include <cstddef>
#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sp::config {

// A value as a TOML basic string that TomlReader turns back into the same bytes.
std::string tomlString(const std::string& s);

// A config file error: the line (1-based; 0 when none) and what is wrong with it.
struct TomlError : std::runtime_error {
    TomlError(int l, const std::string& what) : std::runtime_error(what), line(l) {}
    int line;
};

// Reads `key = value` lines, comments, and values that are basic or literal strings,
// integers, booleans or arrays of those (which may span lines). Tables, inline tables,
// dates, floats and multi-line strings are errors. Keys are returned as written, values as
// text (integers without '+' and '_'). Throws TomlError. Reads at most kMaxConfigBytes.
// Any thread; one reader per input.
class TomlReader {
public:
    struct Item {
        std::string key;
        int line = 0;
        std::vector<std::string> values;
        bool array = false;
    };
    static constexpr std::size_t kMaxConfigBytes = 1 << 20;

    explicit TomlReader(std::istream& in);
    std::vector<Item> items();

private:
    bool atEnd() const { return pos_ >= text_.size(); }
    char peek() const { return text_[pos_]; }
    [[noreturn]] void fail(const std::string& what) const { throw TomlError(line_, what); }
    std::string restOfLine() const;
    void skipBlank(bool newlines);
    void newline();
    std::string key();
    std::vector<std::string> array(const std::string& key);
    std::string scalar(const std::string& key);
    std::string quotedString(const std::string& key);
    void escape(const std::string& key, std::string& out);
    void unicodeEscape(const std::string& key, std::size_t n, std::string& out);

    std::string text_;
    std::size_t pos_ = 0;
    int line_ = 1;
};

} // namespace sp::config
