// stampede-token: prints an access token for the Stampede API, reusing a cached one while
// it stays valid. Run `stampede-token --help` for the options and exit statuses.

#include "token_cache_file.hpp"

#include <stampede/access_token.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/error.hpp>
#include <stampede/logger.hpp>
#include <stampede/secret_string.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_cache_key.hpp>
#include <stampede/token_source.hpp>

#include <boost/algorithm/string/replace.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <openssl/crypto.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#ifndef STAMPEDE_TOKEN_VERSION
#define STAMPEDE_TOKEN_VERSION "unknown"
#endif

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using stampede::client_errc;
using stampede::oauth_errc;
using stampede::token_cli::cached_token;
using stampede::token_cli::token_cache_file;

constexpr std::string_view program_name = "stampede-token";
constexpr std::string_view client_id_variable = "STAMPEDE_CLIENT_ID";
constexpr std::string_view client_secret_variable = "STAMPEDE_CLIENT_SECRET";
constexpr std::size_t max_credentials_file_size = 64 * 1024;

// Exit statuses, documented in the help text.
enum exit_status : int {
    exit_success = 0,
    exit_other_failure = 1,
    exit_usage = 2,
    exit_rejected = 3,
    exit_rate_limited = 4,
    exit_network = 5,
    exit_tls = 6,
    exit_bad_response = 7,
};

constexpr std::string_view help_text = R"(Usage: stampede-token [OPTIONS]

Prints an OAuth 2.0 access token for the Stampede API, or for another server's
client-credentials grant (see --token-url and --auth-method), and a newline to
standard output. The token comes from the client-credentials grant at the token
endpoint, or from the token cache while the cached one stays valid. Nothing
else is written to standard output.

Options:
  --credentials-file FILE  Read the client id and secret from FILE instead of
                           the environment (format below).
  --client-id ID           Use ID as the client id instead of the one from the
                           environment or FILE.
  --token-url URL          Token endpoint. Default: $STAMPEDE_TOKEN_URL if set,
                           else https://global.stampede.ai/oauth/token
                           Plain http:// is accepted only for loopback hosts.
  --ca-file FILE           Trust the PEM certificate authorities in FILE
                           instead of the system store. Default:
                           $STAMPEDE_CA_FILE if set.
  --auth-method METHOD     How the client id and secret are sent: json_body
                           (a JSON body, as the Stampede endpoint expects),
                           client_secret_post (a form-encoded body) or
                           client_secret_basic (an HTTP Basic Authorization
                           header). Default: json_body. Servers that follow
                           RFC 6749 take client_secret_basic or
                           client_secret_post.
  --scope SCOPE            Request SCOPE, a space-separated list of scope
                           tokens (quote it in the shell). Default: none.
  --header                 Print "authorization: Bearer TOKEN" instead of the
                           bare token.
  --no-cache               Neither read nor write the token cache: request a
                           new token.
  --verbose                Log requests, retries and cache decisions to
                           standard error at debug level. The secret and the
                           token are never logged.
  --help                   Print this help and exit.
  --version                Print the version and exit.

The client secret is never accepted on the command line, where other users of
the machine could read it in the process list.

Environment:
  STAMPEDE_CLIENT_ID       Client id (the API key's client id).
  STAMPEDE_CLIENT_SECRET   Client secret.
                           Both are ignored when --credentials-file is given.
  XDG_CACHE_HOME           Base directory of the token cache, if absolute.
  HOME                     The cache is under $HOME/.cache when XDG_CACHE_HOME
                           is not set.

Credentials file:
  Two lines, "client_id=ID" and "client_secret=SECRET". Spaces and tabs around
  keys and values are removed; empty lines and lines starting with "#" are
  ignored. A file that group or others may read, write or execute is rejected:
  run "chmod 600 FILE".

Token cache:
  $XDG_CACHE_HOME/stampede/ (or ~/.cache/stampede/), created with mode 0700,
  holds one file of mode 0600 per token URL, client id, authentication method
  and scope, so runs with different scopes never share a token. Its contents are
  encrypted and authenticated with AES-256-GCM under a key derived from the
  client secret, so the file never holds the token in clear. A cached token is
  used while more than 60 s, or a tenth of its lifetime if that is longer,
  remain before it expires. A corrupt file, or one written with another
  secret, is ignored and replaced.

Retries:
  A request that fails for a reason that may pass (network, timeout, 5xx, rate
  limit) is retried at most twice with exponential backoff, and no retry starts
  later than 20 s after the first request. Each request times out after 15 s,
  and a Retry-After longer than 10 s is shortened to 10 s. Wrong credentials
  and other permanent errors are not retried.

Exit status:
  0  The token was printed.
  1  Any other failure.
  2  Invalid usage or settings, or missing or unreadable credentials.
  3  The token endpoint rejected the credentials, or another permanent OAuth
     error.
  4  Rate limited by the token endpoint (HTTP 429 or an OAuth rate-limit error).
  5  Network failure or timeout.
  6  TLS failure, such as an untrusted or mismatched server certificate.
  7  Unexpected response from the token endpoint (5xx status, malformed body).
)";

// An error in the usage, settings or credentials. `main` prints its message and exits
// with status 2.
class usage_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct command_line {
    std::string token_url{stampede::default_token_url};
    std::string ca_file;
    std::string credentials_file;
    std::string client_id;
    stampede::client_auth_method auth_method = stampede::client_auth_method::json_body;
    std::string scope;
    bool header = false;
    bool verbose = false;
    bool no_cache = false;
    bool help = false;
    bool version = false;
};

struct credentials {
    std::string client_id;
    stampede::secret_string client_secret;
};

struct fetch_result {
    error_code ec;
    stampede::diagnostics diag;
    stampede::access_token token;
};

// Messages

// Replaces every occurrence of the client secret in `text` with "[redacted]".
std::string redact(std::string text, std::string_view secret)
{
    if (secret.empty()) {
        return text;
    }
    for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
        text.replace(at, secret.size(), "[redacted]");
    }
    return text;
}

// Writes "stampede-token: MESSAGE" to standard error as one line.
void print_error(std::string_view message)
{
    std::string line;
    line.append(program_name).append(": ").append(message);
    for (char& c : line) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            c = ' ';
        }
    }
    line.append("\n");
    std::fwrite(line.data(), 1, line.size(), stderr);
}

// Returns an option name fit to be repeated in a message. Anything but a plain
// "--lower-case-name" is not shown, because it might be a secret pasted in the wrong place.
std::string displayed_option(std::string_view name, int position)
{
    const bool plain = name.size() > 2 && name.size() <= 40 && name.starts_with("--") &&
                       name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-", 2) ==
                           std::string_view::npos;
    if (plain) {
        return std::string(name);
    }
    return "in position " + std::to_string(position) + " (not shown)";
}

// Command line

// The value is not repeated in the message, because it might be a secret pasted in the
// wrong place.
stampede::client_auth_method parse_auth_method(const std::string& value)
{
    if (const auto method = stampede::parse_client_auth_method(value)) {
        return *method;
    }
    throw usage_error("option --auth-method has an invalid value; use json_body, "
                      "client_secret_post or client_secret_basic");
}

// Returns the defaults, with the token URL and CA file taken from the same variables as
// the examples use. The options override them.
command_line defaults_from_environment()
{
    command_line defaults;
    if (const char* url = std::getenv("STAMPEDE_TOKEN_URL"); url != nullptr && *url != '\0') {
        defaults.token_url = url;
    }
    if (const char* file = std::getenv("STAMPEDE_CA_FILE"); file != nullptr && *file != '\0') {
        defaults.ca_file = file;
    }
    return defaults;
}

command_line parse_command_line(int argc, char** argv)
{
    command_line options = defaults_from_environment();
    for (int i = 1; i < argc; ++i) {
        const std::string_view argument = argv[i];
        std::string_view name = argument;
        std::optional<std::string_view> attached_value;
        if (const auto equals = argument.find('=');
            argument.starts_with("--") && equals != std::string_view::npos) {
            name = argument.substr(0, equals);
            attached_value = argument.substr(equals + 1);
        }
        const std::string display_name = displayed_option(name, i);

        // Takes the value from "--name=VALUE" or from the next argument.
        auto value = [&]() -> std::string {
            std::string_view text;
            if (attached_value) {
                text = *attached_value;
            } else if (i + 1 < argc) {
                text = argv[++i];
            } else {
                throw usage_error("option " + display_name + " requires a value; see --help");
            }
            if (text.empty()) {
                throw usage_error("option " + display_name + " has an empty value");
            }
            return std::string(text);
        };
        auto flag = [&](bool& target) {
            if (attached_value) {
                throw usage_error("option " + display_name + " takes no value");
            }
            target = true;
        };

        if (name == "--token-url") {
            options.token_url = value();
        } else if (name == "--ca-file") {
            options.ca_file = value();
        } else if (name == "--credentials-file") {
            options.credentials_file = value();
        } else if (name == "--client-id") {
            options.client_id = value();
        } else if (name == "--auth-method") {
            options.auth_method = parse_auth_method(value());
        } else if (name == "--scope") {
            options.scope = value();
        } else if (name == "--header") {
            flag(options.header);
        } else if (name == "--verbose") {
            flag(options.verbose);
        } else if (name == "--no-cache") {
            flag(options.no_cache);
        } else if (name == "--help" || name == "-h") {
            flag(options.help);
        } else if (name == "--version") {
            flag(options.version);
        } else if (name == "--client-secret" || name == "--secret") {
            throw usage_error("the client secret is not accepted on the command line, where "
                              "other users can read it; set STAMPEDE_CLIENT_SECRET or use "
                              "--credentials-file FILE");
        } else if (name.starts_with("-")) {
            throw usage_error("unknown option " + display_name + "; see --help");
        } else {
            throw usage_error("unexpected argument in position " + std::to_string(i) +
                              " (not shown); this tool takes options only, see --help");
        }
    }
    return options;
}

// Credentials

std::string_view trim(std::string_view text)
{
    const auto first = text.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = text.find_last_not_of(" \t\r");
    return text.substr(first, last - first + 1);
}

// Reads the whole credentials file into `content`, after checking that it is a regular
// file that only its owner may access.
void read_private_file(const std::string& file, std::string& content)
{
    const int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        throw usage_error("cannot open credentials file " + file + ": " + std::strerror(errno));
    }
    struct file_closer {
        int fd;
        ~file_closer() { ::close(fd); }
    } closer{fd};

    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        throw usage_error("cannot inspect credentials file " + file + ": " + std::strerror(errno));
    }
    if (!S_ISREG(info.st_mode)) {
        throw usage_error("credentials file " + file + " is not a regular file");
    }
    if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
        throw usage_error("credentials file " + file + " has mode " + mode +
                          ", so group or others may access it; run chmod 600 " + file);
    }
    if (static_cast<std::size_t>(info.st_size) > max_credentials_file_size) {
        throw usage_error("credentials file " + file + " is larger than 64 KiB; expected two "
                          "lines, client_id=ID and client_secret=SECRET");
    }

    content.resize(static_cast<std::size_t>(info.st_size));
    std::size_t done = 0;
    while (done < content.size()) {
        const ssize_t count = ::read(fd, content.data() + done, content.size() - done);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count <= 0) {
            throw usage_error("reading credentials file " + file + " failed: " +
                              (count < 0 ? std::strerror(errno) : "it was truncated"));
        }
        done += static_cast<std::size_t>(count);
    }
}

// Parses the credentials file format described in the help text. Messages name the line
// but never show its text, which may hold the secret.
credentials parse_credentials_file(const std::string& file, std::string_view content)
{
    credentials result;
    bool has_secret = false;
    std::size_t line_number = 0;
    while (!content.empty()) {
        const auto end = content.find('\n');
        const std::string_view line = trim(content.substr(0, end));
        content = end == std::string_view::npos ? std::string_view{} : content.substr(end + 1);
        ++line_number;
        if (line.empty() || line.front() == '#') {
            continue;
        }

        const std::string where = "credentials file " + file + ", line " +
                                  std::to_string(line_number) + ": ";
        const auto equals = line.find('=');
        if (equals == std::string_view::npos) {
            throw usage_error(where + "expected client_id=ID or client_secret=SECRET");
        }
        const std::string_view key = trim(line.substr(0, equals));
        const std::string_view value = trim(line.substr(equals + 1));
        if (key == "client_id") {
            if (!result.client_id.empty()) {
                throw usage_error(where + "client_id is set a second time");
            }
            result.client_id = std::string(value);
        } else if (key == "client_secret") {
            if (has_secret) {
                throw usage_error(where + "client_secret is set a second time");
            }
            result.client_secret = stampede::secret_string(value);
            has_secret = true;
        } else {
            throw usage_error(where + "unknown key; expected client_id or client_secret");
        }
    }
    return result;
}

credentials read_credentials_file(const std::string& file)
{
    std::string content;
    struct content_wiper {
        std::string& content;
        ~content_wiper() { OPENSSL_cleanse(content.data(), content.size()); }
    } wiper{content};

    read_private_file(file, content);
    return parse_credentials_file(file, content);
}

credentials read_credentials_environment()
{
    credentials result;
    if (const char* id = std::getenv(client_id_variable.data())) {
        result.client_id = id;
    }
    if (const char* secret = std::getenv(client_secret_variable.data())) {
        result.client_secret = stampede::secret_string(secret);
    }
    return result;
}

credentials load_credentials(const command_line& options)
{
    const bool from_file = !options.credentials_file.empty();
    credentials result = from_file ? read_credentials_file(options.credentials_file)
                                   : read_credentials_environment();
    if (!options.client_id.empty()) {
        result.client_id = options.client_id;
    }

    if (from_file && result.client_id.empty()) {
        throw usage_error("credentials file " + options.credentials_file +
                          " has no client_id line; add one or pass --client-id ID");
    }
    if (from_file && result.client_secret.empty()) {
        throw usage_error("credentials file " + options.credentials_file +
                          " has no client_secret line, or its value is empty; add one");
    }
    if (result.client_id.empty() && result.client_secret.empty()) {
        throw usage_error("no credentials: set STAMPEDE_CLIENT_ID and STAMPEDE_CLIENT_SECRET, "
                          "or pass --credentials-file FILE");
    }
    if (result.client_id.empty()) {
        throw usage_error("no client id: set STAMPEDE_CLIENT_ID, pass --client-id ID, or pass "
                          "--credentials-file FILE");
    }
    if (result.client_secret.empty()) {
        throw usage_error("no client secret: set STAMPEDE_CLIENT_SECRET, or pass "
                          "--credentials-file FILE");
    }
    return result;
}

// Returns the settings of a one-shot run. A failing run gives up after at most three
// requests, all started within 20 s, instead of retrying for minutes like a service.
stampede::token_source_settings make_settings(const command_line& options, credentials creds,
                                              stampede::logger lg)
{
    stampede::token_source_settings settings;
    settings.client_id = std::move(creds.client_id);
    settings.client_secret = std::move(creds.client_secret);
    settings.token_url = options.token_url;
    settings.auth_method = options.auth_method;
    settings.scope = options.scope;
    settings.transport.ca_file = options.ca_file;
    settings.transport.request_timeout = std::chrono::seconds(15);
    settings.backoff.max_attempts = 3;
    settings.backoff.max_elapsed = std::chrono::seconds(20);
    settings.backoff.max_retry_after = std::chrono::seconds(10);

    // The process requests one token, so no later caller could be spared a request.
    settings.permanent_error_cooldown = std::chrono::milliseconds(0);
    settings.logger = std::move(lg);
    return settings;
}

// Failure classification

int status_for_client_error(client_errc code)
{
    switch (code) {
    case client_errc::invalid_settings:
    case client_errc::insecure_url:
        return exit_usage;
    case client_errc::resolve_timeout:
    case client_errc::connect_timeout:
    case client_errc::handshake_timeout:
    case client_errc::write_timeout:
    case client_errc::read_timeout:
    case client_errc::request_timeout:
        return exit_network;
    case client_errc::certificate_verification_failed:
        return exit_tls;
    case client_errc::header_too_large:
    case client_errc::body_too_large:
    case client_errc::malformed_response:
    case client_errc::missing_access_token:
    case client_errc::unsupported_token_type:
    case client_errc::invalid_expires_in:
        return exit_bad_response;
    }
    return exit_other_failure;
}

int status_for_oauth_error(oauth_errc code)
{
    switch (code) {
    case oauth_errc::slow_down:
    case oauth_errc::rate_limit_exceeded:
    case oauth_errc::too_many_requests:
        return exit_rate_limited;
    case oauth_errc::temporarily_unavailable:
    case oauth_errc::server_error:
        return exit_bad_response;
    default:
        return exit_rejected;
    }
}

int status_for_http_status(int status)
{
    if (status == 429) {
        return exit_rate_limited;
    }
    if (status == 401 || status == 403) {
        return exit_rejected;
    }
    return exit_bad_response;
}

// Maps a failed fetch to the exit status documented in the help text.
int exit_status_for(const error_code& ec)
{
    const auto& category = ec.category();
    if (category == stampede::client_category()) {
        return status_for_client_error(static_cast<client_errc>(ec.value()));
    }
    if (category == stampede::oauth_category()) {
        return status_for_oauth_error(static_cast<oauth_errc>(ec.value()));
    }
    if (category == stampede::http_category()) {
        return status_for_http_status(ec.value());
    }
    if (category == asio::error::get_ssl_category()) {
        return exit_tls;
    }
    if (ec == asio::error::operation_aborted || ec == boost::system::errc::not_enough_memory) {
        return exit_other_failure;
    }
    if (category == beast::http::make_error_code(beast::http::error::end_of_stream).category()) {
        const bool cut_off =
            ec == beast::http::error::end_of_stream || ec == beast::http::error::partial_message;
        return cut_off ? exit_network : exit_bad_response;
    }
    if (category == boost::system::system_category() ||
        category == boost::system::generic_category() ||
        category == asio::error::get_netdb_category() ||
        category == asio::error::get_addrinfo_category() ||
        category == asio::error::get_misc_category() ||
        category == asio::ssl::error::get_stream_category() ||
        ec == beast::error::timeout) {
        return exit_network;
    }
    return exit_other_failure;
}

// Returns what to do about a failure with exit status `status`, as whole sentences.
std::string advice_for(int status, const stampede::diagnostics& diag)
{
    switch (status) {
    case exit_usage:
        return "Check the options, see --help.";
    case exit_rejected: {
        const std::string& code = diag.server_error_code();
        if (code == "invalid_scope") {
            return "Check --scope against the scopes the client may request.";
        }
        if (diag.http_status() == 404 || diag.http_status() == 405) {
            return "Check --token-url: the server has no token endpoint there.";
        }
        if (code == "invalid_request" || code == "unsupported_grant_type") {
            return "Check --auth-method: the server may expect another way of sending the "
                   "credentials.";
        }
        return "The client id and secret come from STAMPEDE_CLIENT_ID and "
               "STAMPEDE_CLIENT_SECRET, or from the credentials file.";
    }
    case exit_rate_limited: {
        std::string advice =
            "The token endpoint limits requests per client (Stampede's allows about 20 a "
            "minute). ";
        if (const auto delay = diag.retry_after()) {
            const auto seconds = std::chrono::ceil<std::chrono::seconds>(*delay).count();
            advice += "The server requested a wait of " + std::to_string(seconds) + " s. ";
        }
        return advice + "Wait, then run again without --no-cache.";
    }
    case exit_network:
        return "Check the network connection and --token-url, then run again.";
    case exit_tls:
        return "Check --ca-file and that the server certificate matches the --token-url host.";
    case exit_bad_response:
        return "The server may be failing: run again later, with --verbose for details.";
    default:
        return "Run again with --verbose for details.";
    }
}

bool is_token_character(char c)
{
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("-._~+=").find(c) != std::string_view::npos;
}

// Replaces long opaque strings in `text` with "[redacted]", because a hostile or broken
// server may put a working access token into an error description, and the SDK redacts
// only the tokens it was issued.
// NOTE: this is a heuristic. It hides every run of 32 or more characters from
// [A-Za-z0-9-._~+=] that has a letter and a digit, so a long identifier is hidden too,
// and a token split by other characters is not recognised.
std::string redact_token_like(std::string text)
{
    constexpr std::size_t min_token_size = 32;
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t end = i;
        bool has_letter = false;
        bool has_digit = false;
        while (end < text.size() && is_token_character(text[end])) {
            const auto c = static_cast<unsigned char>(text[end]);
            has_letter = has_letter || std::isalpha(c) != 0;
            has_digit = has_digit || std::isdigit(c) != 0;
            ++end;
        }
        if (end == i) {
            out.push_back(text[i]);
            ++i;
            continue;
        }
        const bool token_like = end - i >= min_token_size && has_letter && has_digit;
        out.append(token_like ? std::string_view("[redacted]")
                              : std::string_view(text).substr(i, end - i));
        i = end;
    }
    OPENSSL_cleanse(text.data(), text.size());
    return out;
}

// Returns server-influenced text fit to print: without the client secret or anything that
// looks like a token.
std::string sanitize(const std::string& text, std::string_view secret)
{
    return redact_token_like(redact(text, secret));
}

// Rewrites the SDK's own message, which names token_source_settings fields and speaks of
// later calls, in terms of this program's options and environment variables.
// NOTE: the phrases match the SDK's current wording, so a reworded SDK message passes
// through untranslated. The tests check the CA and retry messages.
std::string to_cli_terms(std::string message)
{
    struct rewrite {
        std::string_view sdk_phrase;
        std::string_view cli_phrase;
    };
    constexpr std::string_view set_ca_file =
        "; set --ca-file or STAMPEDE_CA_FILE to a PEM file of certificate authorities";
    const rewrite rewrites[] = {
        {"set transport.ca_file to that authority's PEM certificate",
         "pass that authority's PEM certificate with --ca-file or STAMPEDE_CA_FILE"},
        {"transport.ca_file \"", "CA file \""},
        {"; set it to a PEM file of certificate authorities", set_ca_file},
        {"; set transport.ca_file", set_ca_file},
        {"; check transport_settings::ca_file and ca_directory",
         "; check --ca-file or STAMPEDE_CA_FILE"},
        {"token_url \"", "token URL \""},
        {", or set transport.allow_insecure_http", ""},
        {"; the next call starts a new fetch", ""},
    };
    for (const rewrite& r : rewrites) {
        boost::algorithm::replace_all(message, r.sdk_phrase, r.cli_phrase);
    }

    // This program fixes the timeouts and size limits, so the names of those settings,
    // such as " (transport.connect_timeout)", would only puzzle its user.
    for (const std::string_view prefix : {" (transport.", " (transport_settings::"}) {
        auto at = message.find(prefix);
        while (at != std::string::npos) {
            const auto close = message.find(')', at);
            if (close == std::string::npos) {
                break;
            }
            message.erase(at, close + 1 - at);
            at = message.find(prefix, at);
        }
    }
    return message;
}

// Prints the failure as one line, plus a second line with the server's text if it sent
// any, and returns the exit status.
int report_failure(std::string_view what, const error_code& ec, const stampede::diagnostics& diag,
                   std::string_view secret)
{
    const int status = exit_status_for(ec);
    std::string detail = to_cli_terms(
        diag.client_message().empty() ? ec.message() : sanitize(diag.client_message(), secret));
    while (!detail.empty() && (detail.back() == '.' || detail.back() == ' ')) {
        detail.pop_back();
    }
    print_error(std::string(what) + " failed: " + detail + ". " + advice_for(status, diag));
    if (!diag.server_message().empty()) {
        print_error("server message (untrusted): " + sanitize(diag.server_message(), secret));
    }
    return status;
}

// Token

fetch_result fetch_token(stampede::token_source_settings settings)
{
    fetch_result result;
    asio::io_context io;
    std::optional<stampede::token_source> source;
    try {
        source.emplace(io, std::move(settings));
    } catch (const stampede::error_with_diagnostics& e) {
        result.ec = e.code();
        result.diag = e.get_diagnostics();
        return result;
    }

    // Shutting the source down after the one call stops its refresh timer, so that
    // `run()` returns.
    auto get_token = [&]() -> asio::awaitable<void> {
        auto [ec, token] = co_await source->async_token(result.diag,
                                                        asio::as_tuple(asio::use_awaitable));
        result.ec = ec;
        result.token = std::move(token);
        source->shutdown();
    };
    asio::co_spawn(io, get_token(), [](std::exception_ptr e) {
        if (e) {
            std::rethrow_exception(e);
        }
    });
    io.run();
    return result;
}

cached_token to_cached_token(const stampede::access_token& token)
{
    using namespace std::chrono;
    cached_token cached;
    cached.access_token = stampede::secret_string(token.value());
    cached.token_type = std::string(token.token_type());
    cached.scope = std::string(token.scope());
    cached.received_at_ms = stampede::token_cli::unix_now_ms();
    cached.expires_at_ms =
        duration_cast<milliseconds>(token.expires_at_system().time_since_epoch()).count();
    return cached;
}

int print_token(std::string_view token, bool header)
{
    std::string line;
    struct line_wiper {
        std::string& line;
        ~line_wiper() { OPENSSL_cleanse(line.data(), line.size()); }
    } wiper{line};

    line.reserve(token.size() + 32);
    if (header) {
        line.append("authorization: Bearer ");
    }
    line.append(token).append("\n");

    const std::size_t written = std::fwrite(line.data(), 1, line.size(), stdout);
    if (written != line.size() || std::fflush(stdout) != 0) {
        print_error(std::string("writing the token to standard output failed: ") +
                    std::strerror(errno));
        return exit_other_failure;
    }
    return exit_success;
}

// Cache

std::optional<token_cache_file> open_cache(const command_line& options,
                                           const stampede::token_source_settings& settings)
{
    const stampede::logger& lg = settings.logger;
    if (options.no_cache) {
        if (lg.enabled(stampede::log_level::debug)) {
            lg.sink(stampede::log_level::debug, "token cache not used: --no-cache");
        }
        return std::nullopt;
    }
    std::filesystem::path directory = stampede::token_cli::default_cache_directory();
    if (directory.empty()) {
        if (lg.enabled(stampede::log_level::debug)) {
            lg.sink(stampede::log_level::debug,
                    "token cache not used: neither XDG_CACHE_HOME nor HOME is set");
        }
        return std::nullopt;
    }
    return std::make_optional<token_cache_file>(std::move(directory),
                                                stampede::token_cache_key(settings),
                                                settings.client_secret, lg);
}

// Returns the cached token when it is fresh enough to hand out.
std::optional<cached_token> load_fresh(const token_cache_file& cache, const stampede::logger& lg)
{
    std::optional<cached_token> token = cache.load();
    if (!token) {
        return std::nullopt;
    }
    const std::int64_t now = stampede::token_cli::unix_now_ms();
    const bool fresh = stampede::token_cli::is_fresh(*token, now);
    if (lg.enabled(stampede::log_level::debug)) {
        const std::int64_t left_s = (token->expires_at_ms - now) / 1000;
        const auto margin_s = stampede::token_cli::refresh_margin(*token).count() / 1000;
        lg.sink(stampede::log_level::debug,
                std::string(fresh ? "token cache hit" : "token cache entry too old") +
                    ": the cached token expires in " + std::to_string(left_s) +
                    " s, refresh margin " + std::to_string(margin_s) + " s");
    }
    if (!fresh) {
        return std::nullopt;
    }
    return token;
}

int run(int argc, char** argv)
{
    const command_line options = parse_command_line(argc, argv);
    if (options.help) {
        std::fwrite(help_text.data(), 1, help_text.size(), stdout);
        return exit_success;
    }
    if (options.version) {
        std::printf("%s %s\n", program_name.data(), STAMPEDE_TOKEN_VERSION);
        return exit_success;
    }

    stampede::logger lg = options.verbose ? stampede::logger::to_stderr(stampede::log_level::debug)
                                          : stampede::logger{};
    stampede::token_source_settings settings =
        make_settings(options, load_credentials(options), std::move(lg));
    stampede::diagnostics diag;
    if (const error_code ec = stampede::validate(settings, diag)) {
        return report_failure("checking the settings", ec, diag,
                              settings.client_secret.reveal());
    }

    // A fresh cached token saves a request to the rate-limited token endpoint.
    const std::optional<token_cache_file> cache = open_cache(options, settings);
    if (cache) {
        if (const std::optional<cached_token> cached = load_fresh(*cache, settings.logger)) {
            return print_token(cached->access_token.reveal(), options.header);
        }
    }

    const fetch_result fetched = fetch_token(settings);
    if (fetched.ec) {
        return report_failure("getting an access token from " + settings.token_url, fetched.ec,
                              fetched.diag, settings.client_secret.reveal());
    }

    // A token too close to expiry for the next run to use is not worth a file write.
    if (cache) {
        const cached_token cached = to_cached_token(fetched.token);
        if (stampede::token_cli::is_fresh(cached, cached.received_at_ms)) {
            cache->store(cached);
        }
    }
    return print_token(fetched.token.value(), options.header);
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return run(argc, argv);
    } catch (const usage_error& e) {
        print_error(e.what());
        return exit_usage;
    } catch (const std::exception& e) {
        print_error(std::string("unexpected failure: ") + e.what() +
                    ". Run again with --verbose for details.");
        return exit_other_failure;
    }
}
