// stampede-emulator: runs the Stampede API emulator until SIGINT or SIGTERM.
// The first line on stdout is the token URL. Logs go to stderr.

#include "emulator.hpp"
#include "emulator_service.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <sys/resource.h>

#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#ifndef STAMPEDE_EMULATOR_VERSION
#define STAMPEDE_EMULATOR_VERSION "unknown"
#endif

namespace {

namespace emulator = stampede::emulator;
using namespace std::string_view_literals;

constexpr int exit_usage = 2;
constexpr int exit_failure = 1;

// A command-line error. The message names the option and what it expects.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct command_line {
    emulator::options options;
    bool quiet = false;
    bool help = false;
    bool version = false;
};

[[noreturn]] void reject(std::string_view option, std::string_view expected)
{
    throw usage_error(std::string(option) + ": expected " + std::string(expected));
}

std::chrono::milliseconds parse_seconds(std::string_view option, std::string_view text)
{
    double seconds = 0;
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, seconds, std::chars_format::fixed);
    if (text.empty() || error != std::errc{} || stop != end || !std::isfinite(seconds) ||
        seconds < 0.001 || seconds > 1e9) {
        reject(option, "seconds from 0.001 to 1000000000, such as 30 or 0.5, but got '" +
                           std::string(text) + "'");
    }
    return std::chrono::milliseconds(std::llround(seconds * 1000));
}

std::size_t parse_count(std::string_view option, std::string_view text)
{
    std::size_t value = 0;
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc{} || stop != end) {
        reject(option, "a whole number, but got '" + std::string(text) + "'");
    }
    return value;
}

// Splits ID:SECRET. The error never repeats the text, because it contains a secret.
std::pair<std::string, std::string> parse_client(std::string_view text, std::string_view where)
{
    auto colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
        reject(where, "ID:SECRET with a non-empty id and secret");
    }
    return {std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
}

void read_clients_file(std::string_view option, const std::string& path, command_line& line)
{
    std::ifstream in(path);
    if (!in) {
        throw usage_error(std::string(option) + ": cannot open '" + path + "'");
    }
    std::string text;
    for (int number = 1; std::getline(in, text); ++number) {
        if (!text.empty() && text.back() == '\r') {
            text.pop_back();
        }
        if (text.empty() || text.front() == '#') {
            continue;
        }
        std::string where = std::string(option) + " " + path + " line " + std::to_string(number);
        line.options.clients.push_back(parse_client(text, where));
    }
}

struct option_spec {
    std::string_view name;
    std::string_view value_name; ///< empty for a flag
    std::string_view help;
    void (*apply)(command_line& line, std::string_view name, std::string_view value);
};

constexpr option_spec option_table[] = {
    {"--listen", "ADDR:PORT",
     "Address and port to listen on; port 0 picks a free port. IPv6 is written [::1]:0. "
     "Default 127.0.0.1:0.",
     [](command_line& line, std::string_view, std::string_view value) {
         line.options.listen = std::string(value);
     }},
    {"--client", "ID:SECRET",
     "Register a client. Repeatable. Without --client or --clients-file the emulator "
     "registers demo-client:demo-secret.",
     [](command_line& line, std::string_view name, std::string_view value) {
         line.options.clients.push_back(parse_client(value, name));
     }},
    {"--clients-file", "FILE",
     "Register the clients in FILE, one ID:SECRET per line. Blank lines and lines "
     "starting with # are skipped.",
     [](command_line& line, std::string_view name, std::string_view value) {
         read_clients_file(name, std::string(value), line);
     }},
    {"--token-lifetime", "SECONDS",
     "Lifetime of issued access tokens, fractions allowed. expires_in is rounded up to "
     "whole seconds, but the token expires at the exact lifetime. Default 86400.",
     [](command_line& line, std::string_view name, std::string_view value) {
         line.options.token_lifetime = parse_seconds(name, value);
     }},
    {"--token-rate", "N/SECONDS",
     "Token requests accepted per client id in any sliding window of SECONDS. Default 20/60.",
     [](command_line& line, std::string_view name, std::string_view value) {
         try {
             line.options.token_rate = emulator::parse_rate(value);
         } catch (const std::invalid_argument&) {
             reject(name, "N/SECONDS such as 20/60, but got '" + std::string(value) + "'");
         }
     }},
    {"--api-rate", "N/SECONDS",
     "/v1/ requests accepted per client id in any sliding window of SECONDS. Default 100/900.",
     [](command_line& line, std::string_view name, std::string_view value) {
         try {
             line.options.api_rate = emulator::parse_rate(value);
         } catch (const std::invalid_argument&) {
             reject(name, "N/SECONDS such as 100/900, but got '" + std::string(value) + "'");
         }
     }},
    {"--rate-limit-status", "429|400",
     "Status of token rate-limit rejections: 429 with Retry-After, or 400 with error "
     "rate_limit_exceeded. Default 429.",
     [](command_line& line, std::string_view name, std::string_view value) {
         if (value != "429" && value != "400") {
             reject(name, "429 or 400, but got '" + std::string(value) + "'");
         }
         line.options.rate_limit_status = value == "429" ? 429 : 400;
     }},
    {"--plain-http", "", "Serve plain HTTP instead of HTTPS.",
     [](command_line& line, std::string_view, std::string_view) {
         line.options.plain_http = true;
     }},
    {"--cert-out", "FILE", "Write the generated PEM certificate to FILE at start.",
     [](command_line& line, std::string_view, std::string_view value) {
         line.options.cert_out = std::string(value);
     }},
    {"--cert-host", "NAME",
     "Make the certificate valid only for NAME (a DNS name or an IP address). "
     "Default: 127.0.0.1, ::1 and localhost.",
     [](command_line& line, std::string_view, std::string_view value) {
         line.options.cert_host = std::string(value);
     }},
    {"--fault", "SPEC", "Fault script for successive token requests (see FAULT ITEMS).",
     [](command_line& line, std::string_view name, std::string_view value) {
         try {
             stampede::emulator::detail::parse_token_fault_script(value);
         } catch (const std::invalid_argument& error) {
             throw usage_error(std::string(name) + ": " + error.what());
         }
         line.options.fault_script = std::string(value);
     }},
    {"--api-fault", "SPEC", "Fault script for successive /v1/ requests (see FAULT ITEMS).",
     [](command_line& line, std::string_view name, std::string_view value) {
         try {
             stampede::emulator::detail::parse_api_fault_script(value);
         } catch (const std::invalid_argument& error) {
             throw usage_error(std::string(name) + ": " + error.what());
         }
         line.options.api_fault_script = std::string(value);
     }},
    {"--idle-timeout", "SECONDS",
     "Close a connection that sends nothing for this long, fractions allowed. The same "
     "limit applies to the TLS handshake, to reading a request and to writing a response. "
     "Default 30.",
     [](command_line& line, std::string_view name, std::string_view value) {
         line.options.idle_timeout = parse_seconds(name, value);
     }},
    {"--guests", "N", "Number of seeded guest records, at most 100000. Default 60.",
     [](command_line& line, std::string_view name, std::string_view value) {
         line.options.guests = parse_count(name, value);
         if (line.options.guests > 100000) {
             reject(name, "at most 100000 guests");
         }
     }},
    {"--quiet", "",
     "Do not log one line per request on stderr; start, stop and errors are still logged.",
     [](command_line& line, std::string_view, std::string_view) { line.quiet = true; }},
    {"--help", "", "Print this help and exit.",
     [](command_line& line, std::string_view, std::string_view) { line.help = true; }},
    {"--version", "", "Print the version and exit.",
     [](command_line& line, std::string_view, std::string_view) { line.version = true; }},
};

constexpr std::string_view help_epilogue = R"(
FAULT ITEMS
  A fault script is a comma-separated list of items applied to successive
  requests: --fault to requests to /oauth/token, --api-fault to /v1/ requests.
  X*N applies item X to N requests and X* to every later request. After the
  script, requests get normal answers. Items:
    ok                        normal answer
    5xx-html:CODE             status CODE (500-599) with an HTML page
    429                       429 with a JSON body and no Retry-After
    429-seconds:N             429 with Retry-After: N (seconds)
    429-date:N                429 with Retry-After as an HTTP date N seconds ahead
    oauth-error:CODE[:STATUS] JSON {"error":CODE} with STATUS (default 400); a 401 also
                              sends WWW-Authenticate (Basic on the token endpoint)
    bare-400                  400 with a JSON body that has no "error" member
    reset                     abort the connection with a TCP RST after reading the request
    close-mid-body            send the headers and half the body, then close
    stall                     never answer; the connection stays open until the client
                              closes it or the emulator stops
    slow:MS                   answer normally after MS milliseconds (0-3600000)
    garbage-json              200 with a JSON content type and a body that is not JSON
    truncated-json            200 with half of a JSON body and a matching Content-Length
    html-200                  200 with an HTML page
    error-200                 200 with {"error":"invalid_client",...}
    oversize:BYTES            200 with a JSON body of exactly BYTES bytes (2-268435456)
    charset                   normal answer with Content-Type: application/json; charset=utf-8
  Token requests only:
    expires-in:RAW            normal token, but expires_in is the JSON text RAW
                              (such as 0, -5, "3600", 3599.5, 1e12 or null)
    expires-in-missing        normal token without expires_in
    no-access-token           200 without access_token
    token-type:NAME           normal token with token_type NAME
    echo-secret               400 invalid_client whose error_description repeats the
                              request's client_secret and a working access token
  API requests only:
    401                       401 invalid_token, even for a valid token

CONTROL ENDPOINTS (no authentication)
  GET  /_emulator/stats            counters as JSON
  POST /_emulator/revoke           {"access_token":"..."} or {"all":true}
  POST /_emulator/faults           {"token":"SCRIPT"} and/or {"api":"SCRIPT"}
  POST /_emulator/close-idle       close connections waiting for a request
  POST /_emulator/token-lifetime   {"seconds":N} for tokens issued from now on

EXIT STATUS
  0 after SIGINT or SIGTERM, 1 when the server cannot start, 2 for invalid options.
)";

// Wraps text into lines of at most `width` columns, each starting with `indent`.
std::string wrap(std::string_view text, std::string_view indent, std::size_t width)
{
    std::string result;
    std::string line(indent);
    while (!text.empty()) {
        auto space = text.find(' ');
        std::string_view word = text.substr(0, space);
        text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
        if (line.size() > indent.size() && line.size() + 1 + word.size() > width) {
            result += line + "\n";
            line = std::string(indent);
        }
        if (line.size() > indent.size()) {
            line += ' ';
        }
        line += word;
    }
    return result + line + "\n";
}

void print_help()
{
    std::string text =
        "Usage: stampede-emulator [OPTION]...\n"
        "Serve an emulation of the Stampede OAuth 2.0 token endpoint and guest API on\n"
        "loopback, over HTTPS with a self-signed certificate generated at start. The\n"
        "first line on stdout is the token URL; request logs go to stderr.\n\nOPTIONS\n";
    for (const auto& spec : option_table) {
        std::string left = "  " + std::string(spec.name);
        if (!spec.value_name.empty()) {
            left += " " + std::string(spec.value_name);
        }
        text += left + "\n" + wrap(spec.help, "      ", 80);
    }
    text += help_epilogue;
    std::fputs(text.c_str(), stdout);
}

command_line parse_command_line(int argc, char** argv)
{
    command_line line;
    for (int i = 1; i < argc; ++i) {
        std::string_view argument = argv[i];
        std::string_view name = argument;
        std::optional<std::string_view> value;
        if (auto equals = argument.find('=');
            argument.starts_with("--") && equals != argument.npos) {
            name = argument.substr(0, equals);
            value = argument.substr(equals + 1);
        }

        const option_spec* spec = nullptr;
        for (const auto& candidate : option_table) {
            if (candidate.name == name) {
                spec = &candidate;
            }
        }
        if (spec == nullptr) {
            throw usage_error("unknown option '" + std::string(name) + "'");
        }
        if (spec->value_name.empty()) {
            if (value) {
                throw usage_error(std::string(name) + " takes no value");
            }
            spec->apply(line, name, {});
            continue;
        }
        if (!value) {
            if (i + 1 >= argc) {
                reject(name, std::string(spec->value_name) + " after the option");
            }
            value = argv[++i];
        }
        spec->apply(line, name, *value);
    }
    return line;
}

// Raises the open-file limit to its hard maximum, because every connection uses a file
// descriptor and the usual soft limit of 1024 is below the thousands of connections
// that load tests open.
void raise_file_limit()
{
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

// Rewrites "invalid option FIELD: ..." from the server constructor to name the
// command-line option that sets FIELD.
std::string name_command_line_option(std::string message)
{
    constexpr std::pair<std::string_view, std::string_view> options[] = {
        {"listen", "--listen"},      {"clients", "--client"},
        {"cert_out", "--cert-out"},  {"cert_host", "--cert-host"},
        {"fault_script", "--fault"}, {"api_fault_script", "--api-fault"},
    };
    for (auto [field, option] : options) {
        std::string prefix = "invalid option " + std::string(field) + ":";
        if (message.starts_with(prefix)) {
            return std::string(option) + ":" + message.substr(prefix.size());
        }
    }
    return message;
}

void write_log_line(std::string_view line)
{
    std::string text = emulator::detail::format_iso8601(std::chrono::system_clock::now()) + " " +
                       std::string(line) + "\n";
    std::fwrite(text.data(), 1, text.size(), stderr);
}

} // namespace

int main(int argc, char** argv)
{
    command_line line;
    try {
        line = parse_command_line(argc, argv);
    } catch (const usage_error& error) {
        std::fprintf(stderr,
                     "stampede-emulator: %s\nRun 'stampede-emulator --help' for the options.\n",
                     error.what());
        return exit_usage;
    }
    if (line.help) {
        print_help();
        return 0;
    }
    if (line.version) {
        std::printf("stampede-emulator %s\n", STAMPEDE_EMULATOR_VERSION);
        return 0;
    }

    line.options.log_requests = !line.quiet;
    line.options.logger = write_log_line;

    std::optional<emulator::server> server;
    try {
        server.emplace(std::move(line.options));
    } catch (const std::invalid_argument& error) {
        std::fprintf(stderr, "stampede-emulator: %s\n",
                     name_command_line_option(error.what()).c_str());
        return exit_usage;
    }

    raise_file_limit();
    boost::asio::io_context signal_context(1);
    boost::asio::signal_set signals(signal_context, SIGINT, SIGTERM);
    int received = 0;
    signals.async_wait([&](const boost::system::error_code&, int signal) { received = signal; });

    try {
        server->start();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "stampede-emulator: cannot start: %s\n", error.what());
        return exit_failure;
    }
    std::printf("%s\n", server->token_url().c_str());
    std::fflush(stdout);

    signal_context.run();
    write_log_line("received signal " + std::to_string(received) + "; stopping");
    server->stop();
    return 0;
}
