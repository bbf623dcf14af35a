// libFuzzer target: the config file (-g) is operator input, but it is read before anything
// else and must never crash or throw past parse(). The input is written to a file and parsed
// as `sentrypeer -g FILE`; when it is accepted, describe() of the result must read back to
// the same configuration (secrets aside: their lines are comments).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>
#include <variant>

#include "config/config.hpp"

extern char** environ;

namespace {

std::string scratchFile() {
    // The process environment must not change what a file means: drop SENTRYPEER_*.
    std::vector<std::string> names;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string kv = *e;
        if (kv.rfind("SENTRYPEER_", 0) == 0) {
            names.push_back(kv.substr(0, kv.find('=')));
        }
    }
    for (const auto& n : names) {
        unsetenv(n.c_str());
    }
    char path[] = "/tmp/sp_fuzz_config_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        std::perror("mkstemp");
        std::abort();
    }
    close(fd);
    return path;
}

std::variant<sp::config::Config, sp::config::Exit> parseText(const std::string& path,
                                                             const std::string& text) {
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << text;
    }
    const char* argv[] = {"sentrypeer", "-g", path.c_str()};
    return sp::config::parse(3, argv);
}

std::string withoutComments(const std::string& text) {
    std::string out;
    std::size_t at = 0;
    while (at < text.size()) {
        auto end = text.find('\n', at);
        end = end == std::string::npos ? text.size() : end + 1;
        if (text[at] != '#') {
            out.append(text, at, end - at);
        }
        at = end;
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = scratchFile();
    auto first = parseText(path, std::string(reinterpret_cast<const char*>(data), size));
    if (auto* e = std::get_if<sp::config::Exit>(&first)) {
        if (e->code != 2 || e->message.empty() || e->message.find('\n') != std::string::npos) {
            __builtin_trap(); // a config error is one line, exit 2
        }
        return 0;
    }
    std::string text = sp::config::describe(std::get<sp::config::Config>(first));
    auto second = parseText(path, text);
    if (!std::holds_alternative<sp::config::Config>(second)) {
        __builtin_trap(); // describe() wrote something -g refuses
    }
    if (withoutComments(sp::config::describe(std::get<sp::config::Config>(second))) !=
        withoutComments(text)) {
        __builtin_trap(); // the round trip changed a value
    }
    return 0;
}
