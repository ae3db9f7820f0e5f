// Interop tests against two OAuth 2.0 servers that the project did not write, from the npm
// registry: oidc-provider (over HTTPS with a certificate made at start) and
// @node-oauth/oauth2-server (over plain HTTP). Each suite starts its server once with
// Node.js on 127.0.0.1, on ports the system picks, and stops it by process id at the end.
// The servers count every request they receive, so the tests assert request counts.
//
// The pinned packages are installed by `npm ci` in test/interop (./scripts/test runs it).
// Without Node.js or the packages, the program exits with status 77, which CTest reports as
// a skipped test.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE interop
#include <boost/test/unit_test.hpp>

#include <stampede/access_token.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/error.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_to.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace json = boost::json;
namespace fs = std::filesystem;

using namespace std::chrono_literals;
using stampede::client_auth_method;
using stampede::oauth_errc;

namespace {

constexpr const char* interop_dir = STAMPEDE_INTEROP_DIR;
constexpr const char* node_executable = STAMPEDE_NODE_EXECUTABLE;
constexpr const char* tool_binary = STAMPEDE_TOKEN_BINARY;
constexpr std::string_view ready_prefix = "stampede-interop ready ";
constexpr int skip_status = 77;

// The resource indicator that the oidc-provider script serves JWT access tokens for.
constexpr std::string_view interop_resource = "urn:stampede:interop-api";

//
// Clients registered on both servers
//

struct client {
    std::string_view id;
    std::string_view secret;
    std::string_view scope;
    int token_lifetime_seconds = 0;
    bool omit_scope = false;
};

const client basic_client{"basic-client", "interop-secret-Basic-7Qm", "api:read api:write"};

// The secret has every character that form encoding must escape: `:`, `%`, `+`, `/`,
// `&`, `=` and a space.
const client reserved_client{"reserved-client", "a:b%c+d/e&f=g h~", "api:read"};

const client reader_client{"reader-client", "interop-secret-Reader-4Xz", "api:read"};
const client short_client{"short-client", "interop-secret-Short-9Lp", "", 2};
const client silent_scope_client{"silent-scope-client", "interop-secret-Silent-2Vb", "api:read",
                                 0, true};
const client cli_client{"cli-client", "interop-secret-Cli-6Tr", "api:read api:write"};

const std::vector<client> all_clients{basic_client, reader_client,      reserved_client,
                                      short_client, silent_scope_client, cli_client};

std::string clients_json()
{
    json::array clients;
    for (const client& c : all_clients) {
        json::object entry;
        entry["client_id"] = c.id;
        entry["client_secret"] = c.secret;
        if (!c.scope.empty()) {
            entry["scope"] = c.scope;
        }
        if (c.token_lifetime_seconds > 0) {
            entry["token_lifetime"] = c.token_lifetime_seconds;
        }
        if (c.omit_scope) {
            entry["omit_scope"] = true;
        }
        clients.push_back(std::move(entry));
    }
    return json::serialize(clients);
}

//
// Files and processes
//

std::string read_file(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_private_file(const fs::path& path, std::string_view content)
{
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    BOOST_TEST_REQUIRE(fd >= 0, "cannot create " << path);
    const auto written = ::write(fd, content.data(), content.size());
    ::close(fd);
    BOOST_TEST_REQUIRE(written == static_cast<ssize_t>(content.size()));
}

// A directory under the system temporary directory, removed with its contents at the end.
class temp_directory {
public:
    temp_directory()
    {
        std::string pattern = (fs::temp_directory_path() / "stampede-interop.XXXXXX").string();
        BOOST_TEST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }

    temp_directory(const temp_directory&) = delete;
    temp_directory& operator=(const temp_directory&) = delete;

    ~temp_directory()
    {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }

    const fs::path& path() const noexcept { return path_; }

private:
    fs::path path_;
};

// Starts `program` with `args` and `env`, standard output and error going to files, and
// standard input from /dev/null. The child gets SIGTERM if this process dies first.
pid_t spawn(const std::string& program, const std::vector<std::string>& args,
            const std::vector<std::string>& env, const fs::path& out, const fs::path& err)
{
    std::vector<char*> argv{const_cast<char*>(program.c_str())};
    for (const std::string& arg : args) {
        argv.push_back(const_cast<char*>(arg.c_str()));
    }
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& entry : env) {
        envp.push_back(const_cast<char*>(entry.c_str()));
    }
    envp.push_back(nullptr);

    const int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    BOOST_TEST_REQUIRE((in_fd >= 0 && out_fd >= 0 && err_fd >= 0));
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid == 0) {
        // Only async-signal-safe calls until exec.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        ::dup2(in_fd, 0);
        ::dup2(out_fd, 1);
        ::dup2(err_fd, 2);
        ::execve(program.c_str(), argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(in_fd);
    ::close(out_fd);
    ::close(err_fd);
    BOOST_TEST_REQUIRE(pid > 0, "fork failed");
    return pid;
}

// Waits for `pid` and returns its exit status, or 128 plus the signal that ended it.
int wait_for_exit(pid_t pid)
{
    int status = 0;
    pid_t waited = -1;
    do {
        waited = ::waitpid(pid, &status, 0);
    } while (waited < 0 && errno == EINTR);
    if (waited != pid) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<std::string> child_environment()
{
    // PATH lets the server script find openssl. Nothing else is passed, so a DEBUG or
    // NODE_OPTIONS variable of the caller cannot make a server log more.
    const char* path = std::getenv("PATH");
    return {std::string("PATH=") + (path != nullptr ? path : "/usr/bin:/bin")};
}

//
// Servers
//

// What a server script prints once it listens, and where its request log is served.
struct server_endpoints {
    std::string token_url;
    std::string stats_url;
    std::string ca_file;
};

// The request log of a server: how many requests it received, and the latest ones.
struct server_stats {
    std::uint64_t requests = 0;
    json::array log;

    // Returns a copy of the latest request's entry.
    json::object last() const
    {
        BOOST_TEST_REQUIRE(!log.empty());
        return log.back().as_object();
    }
};

json::value http_get_json(const std::string& url)
{
    const auto parsed = boost::urls::parse_uri(url);
    BOOST_TEST_REQUIRE(parsed.has_value(), "invalid stats URL " << url);

    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, resolver.resolve(parsed->host(), parsed->port()));

    http::request<http::empty_body> request{http::verb::get, parsed->path(), 11};
    request.set(http::field::host, parsed->host());
    request.set(http::field::connection, "close");
    http::write(socket, request);

    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    BOOST_TEST_REQUIRE(response.result_int() == 200u, "GET " << url);
    return json::parse(response.body());
}

// A server script run by Node.js until the object is destroyed.
class node_server {
public:
    node_server(std::string_view script, std::string_view name)
        : name_(name)
    {
        write_private_file(directory_.path() / "clients.json", clients_json());
        const fs::path script_path = fs::path(interop_dir) / script;
        pid_ = spawn(node_executable,
                     {script_path.string(), "--clients", (directory_.path() / "clients.json").string(),
                      "--state-dir", directory_.path().string()},
                     child_environment(), out_path(), err_path());
        endpoints_ = wait_until_ready();
    }

    node_server(const node_server&) = delete;
    node_server& operator=(const node_server&) = delete;

    // Stops the server by its process id: SIGTERM, then SIGKILL if it is still running
    // after five seconds.
    ~node_server()
    {
        ::kill(pid_, SIGTERM);
        for (int i = 0; i < 100; ++i) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                return;
            }
            std::this_thread::sleep_for(50ms);
        }
        ::kill(pid_, SIGKILL);
        wait_for_exit(pid_);
    }

    const server_endpoints& endpoints() const noexcept { return endpoints_; }

    // Returns the token URL with its path replaced by `path`.
    std::string url_with_path(std::string_view path) const
    {
        const std::string& url = endpoints_.token_url;
        return url.substr(0, url.find('/', url.find("//") + 2)) + std::string(path);
    }

    server_stats stats() const
    {
        const json::value document = http_get_json(endpoints_.stats_url);
        server_stats stats;
        stats.requests = document.at("requests").to_number<std::uint64_t>();
        stats.log = document.at("log").as_array();
        return stats;
    }

    std::uint64_t requests() const { return stats().requests; }

    // Returns what the server wrote to standard error, for failure messages.
    std::string error_output() const { return read_file(err_path()); }

private:
    fs::path out_path() const { return directory_.path() / "server.out"; }
    fs::path err_path() const { return directory_.path() / "server.err"; }

    server_endpoints wait_until_ready()
    {
        // Generous: Node.js loads the packages and the script makes a certificate and an
        // RSA key, which take a few seconds on a busy machine.
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (std::chrono::steady_clock::now() < deadline) {
            const std::string output = read_file(out_path());
            const auto start = output.find(ready_prefix);
            const auto end = start == std::string::npos ? start : output.find('\n', start);
            if (end != std::string::npos) {
                const auto line = output.substr(start + ready_prefix.size(),
                                                end - start - ready_prefix.size());
                const json::value details = json::parse(line);
                server_endpoints endpoints;
                endpoints.token_url = json::value_to<std::string>(details.at("token_url"));
                endpoints.stats_url = json::value_to<std::string>(details.at("stats_url"));
                if (const auto* ca = details.as_object().if_contains("ca_file")) {
                    endpoints.ca_file = json::value_to<std::string>(*ca);
                }
                return endpoints;
            }
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                BOOST_TEST_REQUIRE(false, name_ << " exited before it was ready: "
                                                << error_output());
            }
            std::this_thread::sleep_for(50ms);
        }
        BOOST_TEST_REQUIRE(false, name_ << " printed no ready line within 60 s: " << error_output());
        return {};
    }

    std::string name_;
    temp_directory directory_;
    pid_t pid_ = -1;
    server_endpoints endpoints_;
};

// How the two servers differ, as read in their source (oidc-provider 8.8.1,
// @node-oauth/oauth2-server 5.3.0).
struct server_profile {
    std::string_view name;
    std::string_view script;

    // Status of an invalid_client error when the credentials came in the body. Both send
    // 401 with WWW-Authenticate when they came in a Basic header.
    unsigned invalid_client_post_status;

    // Whether the server form-decodes the Basic credentials as RFC 6749, section 2.3.1
    // requires. @node-oauth/oauth2-server 5.3.0 compares them as received.
    bool decodes_basic_credentials;

    // Shortest token lifetime the server reports for a 2 s client. oauth2-server can report
    // 1 s, because it rounds the time left down to whole seconds.
    std::chrono::milliseconds min_short_lifetime;
};

const server_profile oidc_profile{"oidc-provider", "oidc_provider_server.mjs", 401, true, 2000ms};
const server_profile oauth2_profile{"@node-oauth/oauth2-server", "oauth2_server.mjs", 400, false,
                                    1000ms};

// The servers are started on first use and stopped when the program ends, so that each
// CTest entry, which runs one suite, starts only its own server.
node_server& server_for(const server_profile& profile)
{
    if (&profile == &oidc_profile) {
        static node_server oidc(oidc_profile.script, oidc_profile.name);
        return oidc;
    }
    static node_server oauth2(oauth2_profile.script, oauth2_profile.name);
    return oauth2;
}

//
// Fetching tokens
//

stampede::token_source_settings settings_for(const server_profile& profile, const client& c,
                                             client_auth_method method)
{
    const node_server& server = server_for(profile);
    stampede::token_source_settings settings;
    settings.client_id = std::string(c.id);
    settings.client_secret = stampede::secret_string(c.secret);
    settings.token_url = server.endpoints().token_url;
    settings.transport.ca_file = server.endpoints().ca_file;
    settings.auth_method = method;

    // The Stampede endpoint's limit does not apply here, and the short-lifetime test
    // refreshes about once a second.
    settings.rate_limit.capacity = 20;
    settings.rate_limit.refill_interval = 50ms;
    return settings;
}

struct fetch_result {
    boost::system::error_code ec;
    stampede::diagnostics diag;
    stampede::access_token token;
};

std::ostream& operator<<(std::ostream& os, const fetch_result& r)
{
    return os << r.ec.message() << ": " << r.diag.client_message()
              << " (server: " << r.diag.server_message() << ")";
}

// Requests one token from `source`, running `io` until it completes.
fetch_result fetch_from(asio::io_context& io, stampede::token_source& source)
{
    fetch_result result;
    bool done = false;
    source.async_token(result.diag, [&](boost::system::error_code ec, stampede::access_token t) {
        result.ec = ec;
        result.token = std::move(t);
        done = true;
    });
    io.restart();
    while (!done && io.run_one() > 0) {
    }
    BOOST_TEST_REQUIRE(done);
    return result;
}

// Requests one token with a new token source for `settings`.
fetch_result fetch(stampede::token_source_settings settings)
{
    asio::io_context io;
    stampede::token_source source(io, std::move(settings));
    fetch_result result = fetch_from(io, source);
    source.shutdown();
    return result;
}

bool contains(std::string_view text, std::string_view part)
{
    return text.find(part) != std::string_view::npos;
}

std::string parameter(const json::object& entry, std::string_view name)
{
    const auto& parameters = entry.at("parameters");
    if (!parameters.is_object()) {
        return "(not logged)";
    }
    const auto* value = parameters.as_object().if_contains(name);
    return value != nullptr && value->is_string() ? std::string(value->as_string())
                                                  : std::string("(absent)");
}

std::string logged(const json::object& entry, std::string_view name)
{
    return json::value_to<std::string>(entry.at(name));
}

std::string base64url_decode(std::string_view text)
{
    std::string standard(text);
    for (char& c : standard) {
        c = c == '-' ? '+' : (c == '_' ? '/' : c);
    }
    const std::size_t padding = (4 - standard.size() % 4) % 4;
    standard.append(padding, '=');
    std::string out(3 * standard.size() / 4, '\0');
    const int length = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                       reinterpret_cast<const unsigned char*>(standard.data()),
                                       static_cast<int>(standard.size()));
    BOOST_TEST_REQUIRE(length >= 0);
    out.resize(static_cast<std::size_t>(length) - padding);
    return out;
}

//
// Checks shared by both servers
//

void check_token_with(const server_profile& profile, client_auth_method method)
{
    node_server& server = server_for(profile);
    const auto before = server.requests();

    const fetch_result r = fetch(settings_for(profile, basic_client, method));
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(!r.token.value().empty());
    BOOST_TEST(r.token.token_type() == "Bearer");

    const server_stats stats = server.stats();
    BOOST_TEST(stats.requests == before + 1);
    const auto& entry = stats.last();
    BOOST_TEST(logged(entry, "path") == "/token");
    BOOST_TEST(logged(entry, "content_type") == "application/x-www-form-urlencoded");
    BOOST_TEST(parameter(entry, "grant_type") == "client_credentials");
    if (method == client_auth_method::client_secret_basic) {
        BOOST_TEST(logged(entry, "authorization") == "basic");
        BOOST_TEST(parameter(entry, "client_id") == "(absent)");
        BOOST_TEST(parameter(entry, "client_secret") == "(absent)");
    } else {
        BOOST_TEST(logged(entry, "authorization") == "none");
        BOOST_TEST(parameter(entry, "client_id") == basic_client.id);
        BOOST_TEST(parameter(entry, "client_secret") == "[not logged]");
    }
}

void check_reserved_secret(const server_profile& profile)
{
    node_server& server = server_for(profile);

    const auto before_post = server.requests();
    const fetch_result post =
        fetch(settings_for(profile, reserved_client, client_auth_method::client_secret_post));
    BOOST_TEST(!post.ec, post);
    BOOST_TEST(server.requests() == before_post + 1);

    const auto before_basic = server.requests();
    const fetch_result basic =
        fetch(settings_for(profile, reserved_client, client_auth_method::client_secret_basic));
    BOOST_TEST(server.requests() == before_basic + 1);
    if (profile.decodes_basic_credentials) {
        BOOST_TEST(!basic.ec, basic);
    } else {
        // The SDK encodes as RFC 6749 requires; this server compares the encoded text.
        BOOST_TEST(basic.ec == oauth_errc::invalid_client, basic);
    }
}

void check_wrong_secret(const server_profile& profile, client_auth_method method)
{
    node_server& server = server_for(profile);
    client wrong = basic_client;
    wrong.secret = "not-the-secret-3Jd";

    asio::io_context io;
    stampede::token_source source(io, settings_for(profile, wrong, method));
    const auto before = server.requests();
    const fetch_result r = fetch_from(io, source);

    BOOST_TEST(r.ec == oauth_errc::invalid_client, r);
    BOOST_TEST(r.ec == stampede::condition::permanent);
    const bool basic = method == client_auth_method::client_secret_basic;
    BOOST_TEST(r.diag.http_status() == (basic ? 401u : profile.invalid_client_post_status));
    if (basic) {
        BOOST_TEST(contains(r.diag.client_message(), "WWW-Authenticate \"Basic"), r);
    }
    BOOST_TEST(!contains(r.diag.client_message(), wrong.secret));
    BOOST_TEST(!contains(r.diag.server_message(), wrong.secret));

    // Exactly one request, with the configured method and no other.
    const server_stats stats = server.stats();
    BOOST_TEST(stats.requests == before + 1);
    BOOST_TEST(logged(stats.last(), "authorization") == (basic ? "basic" : "none"));

    // The permanent error is remembered: a second call fails without a request.
    const fetch_result again = fetch_from(io, source);
    BOOST_TEST(again.ec == oauth_errc::invalid_client, again);
    BOOST_TEST(server.requests() == before + 1);
    BOOST_TEST(source.stats().requests == 1u);
    BOOST_TEST(source.stats().retries == 0u);
    source.shutdown();
}

void check_unknown_client(const server_profile& profile)
{
    node_server& server = server_for(profile);
    client unknown = basic_client;
    unknown.id = "no-such-client";
    for (auto method : {client_auth_method::client_secret_basic,
                        client_auth_method::client_secret_post}) {
        BOOST_TEST_CONTEXT(stampede::to_string(method))
        {
            const auto before = server.requests();
            const fetch_result r = fetch(settings_for(profile, unknown, method));
            BOOST_TEST(r.ec == oauth_errc::invalid_client, r);
            BOOST_TEST(r.ec == stampede::condition::permanent);
            BOOST_TEST(server.requests() == before + 1);
        }
    }
}

void check_scope(const server_profile& profile, client_auth_method method)
{
    node_server& server = server_for(profile);
    auto settings = settings_for(profile, basic_client, method);
    settings.scope = "api:read";

    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(r.token.scope() == "api:read");
    BOOST_TEST(parameter(server.stats().last(), "scope") == "api:read");
}

void check_disallowed_scope(const server_profile& profile)
{
    node_server& server = server_for(profile);
    auto settings = settings_for(profile, reader_client, client_auth_method::client_secret_basic);
    settings.scope = "api:read api:write";

    const auto before = server.requests();
    const fetch_result r = fetch(settings);
    BOOST_TEST(r.ec == oauth_errc::invalid_scope, r);
    BOOST_TEST(r.ec == stampede::condition::permanent);
    BOOST_TEST(contains(r.diag.client_message(), "check the scopes"), r);
    BOOST_TEST(server.requests() == before + 1);
}

void check_parameters_decoded(const server_profile& profile)
{
    node_server& server = server_for(profile);
    auto settings = settings_for(profile, basic_client, client_auth_method::client_secret_post);
    settings.audience = "https://api.example.com/v1?x=1";
    settings.extra_parameters = {{"tenant", "acme"}, {"note", "a&b=c d+e/f%20"}};

    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    const auto& entry = server.stats().last();
    BOOST_TEST(parameter(entry, "audience") == settings.audience);
    BOOST_TEST(parameter(entry, "tenant") == "acme");
    BOOST_TEST(parameter(entry, "note") == "a&b=c d+e/f%20");
}

void check_wrong_path(const server_profile& profile)
{
    node_server& server = server_for(profile);
    auto settings = settings_for(profile, basic_client, client_auth_method::client_secret_basic);
    settings.token_url = server.url_with_path("/oauth/token");

    const auto before = server.requests();
    const fetch_result r = fetch(settings);
    BOOST_TEST(r.diag.http_status() == 404u, r);
    BOOST_TEST(r.ec == stampede::condition::permanent, r);
    BOOST_TEST(contains(r.diag.client_message(), "HTTP 404"), r);
    BOOST_TEST(contains(r.diag.client_message(), "check token_url"), r);
    BOOST_TEST(server.requests() == before + 1);
}

void check_json_body_rejected(const server_profile& profile)
{
    node_server& server = server_for(profile);
    const auto before = server.requests();
    const fetch_result r = fetch(settings_for(profile, basic_client, client_auth_method::json_body));
    BOOST_TEST(r.ec == oauth_errc::invalid_request, r);
    BOOST_TEST(r.ec == stampede::condition::permanent);
    BOOST_TEST(r.diag.http_status() == 400u);
    BOOST_TEST(contains(r.diag.server_message(), "x-www-form-urlencoded"), r);
    BOOST_TEST(server.requests() == before + 1);
}

// Calls for a token every 50 ms for five seconds of a client whose tokens live 2 s.
void check_short_lifetime(const server_profile& profile)
{
    node_server& server = server_for(profile);
    asio::io_context io;
    stampede::token_source source(
        io, settings_for(profile, short_client, client_auth_method::client_secret_basic));

    const auto before = server.requests();
    const auto start = std::chrono::steady_clock::now();
    std::set<std::string> tokens;
    std::size_t expired_handouts = 0;
    bool failed = false;
    auto caller = [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(io);
        while (std::chrono::steady_clock::now() - start < 5s) {
            auto [ec, token] = co_await source.async_token(asio::as_tuple(asio::use_awaitable));
            if (ec) {
                failed = true;
                break;
            }

            if (token.expires_at() <= std::chrono::steady_clock::now()) {
                ++expired_handouts;
            }
            tokens.insert(std::string(token.value()));
            timer.expires_after(50ms);
            co_await timer.async_wait(asio::use_awaitable);
        }
        source.shutdown();
    };
    asio::co_spawn(io, caller(), [](std::exception_ptr e) {
        if (e) {
            std::rethrow_exception(e);
        }
    });
    io.run();
    const auto elapsed = std::chrono::steady_clock::now() - start;

    const auto stats = source.stats();
    const auto requests = server.requests() - before;
    BOOST_TEST_MESSAGE(profile.name << ": " << requests << " requests, " << tokens.size()
                                    << " tokens in " << std::chrono::duration<double>(elapsed).count()
                                    << " s; " << stats);
    BOOST_TEST(!failed, stats);
    BOOST_TEST(expired_handouts == 0u);
    BOOST_TEST(requests == stats.requests, stats);
    BOOST_TEST(stats.tokens_fetched == stats.requests, stats);
    BOOST_TEST(stats.retries == 0u, stats);

    // Each request brought a new token: one request per token lifetime, no duplicates.
    BOOST_TEST(tokens.size() == requests, stats);

    // Refreshes ran in the background, ahead of expiry.
    BOOST_TEST(stats.refreshes_ahead >= 2u, stats);

    // A refresh starts no earlier than halfway through the usable lifetime (the lifetime
    // less a tenth), so the requests cannot outnumber this bound however the timers ran.
    const auto min_interval = profile.min_short_lifetime * 45 / 100;
    const auto max_requests = 1 + static_cast<std::uint64_t>(elapsed / min_interval);
    BOOST_TEST(requests <= max_requests, stats);

    // Tokens stop being handed out at 90% of their lifetime, so five seconds of calls
    // need at least this many.
    const auto lifetime = std::chrono::milliseconds(short_client.token_lifetime_seconds * 1000);
    BOOST_TEST(tokens.size() >= static_cast<std::size_t>(5s / lifetime) + 1, stats);
}

//
// stampede-token
//

struct tool_result {
    int exit_status = -1;
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const tool_result& r)
{
    return os << "exit " << r.exit_status << ", stderr: " << r.err;
}

tool_result run_tool(const temp_directory& home, const std::vector<std::string>& args)
{
    static int runs = 0;
    const fs::path prefix = home.path() / ("run-" + std::to_string(runs++));
    const std::vector<std::string> env{
        "HOME=" + home.path().string(), "XDG_CACHE_HOME=" + (home.path() / "cache").string(),
        "STAMPEDE_CLIENT_ID=" + std::string(cli_client.id),
        "STAMPEDE_CLIENT_SECRET=" + std::string(cli_client.secret)};
    const pid_t pid = spawn(tool_binary, args, env, prefix.string() + ".out",
                            prefix.string() + ".err");
    tool_result result;
    result.exit_status = wait_for_exit(pid);
    result.out = read_file(prefix.string() + ".out");
    result.err = read_file(prefix.string() + ".err");
    return result;
}

//
// Set-up
//

// Exits with the skip status when Node.js or the packages are missing.
struct prerequisites {
    prerequisites()
    {
        const fs::path modules = fs::path(interop_dir) / "node_modules";
        std::string missing;
        if (std::string_view(node_executable).empty() || !fs::exists(node_executable)) {
            missing = "Node.js (install the Debian packages nodejs and npm)";
        } else if (!fs::exists(modules / "oidc-provider" / "package.json") ||
                   !fs::exists(modules / "@node-oauth" / "oauth2-server" / "package.json")) {
            missing = "the npm packages (run \"npm ci\" in " + std::string(interop_dir) +
                      ", as ./scripts/test does)";
        }
        if (!missing.empty()) {
            std::cout << "interop tests skipped: missing " << missing << std::endl;
            std::exit(skip_status);
        }
    }
};

BOOST_TEST_GLOBAL_FIXTURE(prerequisites);

} // namespace

BOOST_AUTO_TEST_SUITE(oidc_provider)

BOOST_AUTO_TEST_CASE(basic_gets_token)
{
    check_token_with(oidc_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(post_gets_token)
{
    check_token_with(oidc_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(reserved_secret_both_methods) { check_reserved_secret(oidc_profile); }

BOOST_AUTO_TEST_CASE(wrong_secret_basic)
{
    check_wrong_secret(oidc_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(wrong_secret_post)
{
    check_wrong_secret(oidc_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(unknown_client_rejected) { check_unknown_client(oidc_profile); }

BOOST_AUTO_TEST_CASE(scope_granted_basic)
{
    check_scope(oidc_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(scope_granted_post)
{
    check_scope(oidc_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(disallowed_scope_rejected) { check_disallowed_scope(oidc_profile); }

BOOST_AUTO_TEST_CASE(parameters_arrive_decoded) { check_parameters_decoded(oidc_profile); }

BOOST_AUTO_TEST_CASE(resource_sets_audience)
{
    auto settings =
        settings_for(oidc_profile, basic_client, client_auth_method::client_secret_basic);
    settings.resource = std::string(interop_resource);
    settings.scope = "api:write";

    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(r.token.scope() == "api:write");

    // The server issues a JWT for this resource; its payload names the audience.
    const std::string_view token = r.token.value();
    const auto first_dot = token.find('.');
    const auto second_dot = token.find('.', first_dot + 1);
    BOOST_TEST_REQUIRE(second_dot != std::string_view::npos);
    const json::value payload =
        json::parse(base64url_decode(token.substr(first_dot + 1, second_dot - first_dot - 1)));
    BOOST_TEST(json::value_to<std::string>(payload.at("aud")) == interop_resource);
    BOOST_TEST(json::value_to<std::string>(payload.at("client_id")) == basic_client.id);
}

BOOST_AUTO_TEST_CASE(unknown_resource_rejected)
{
    auto settings =
        settings_for(oidc_profile, basic_client, client_auth_method::client_secret_basic);
    settings.resource = "urn:stampede:unknown-api";
    const fetch_result r = fetch(settings);
    BOOST_TEST(r.ec == oauth_errc::other, r);
    BOOST_TEST(r.diag.server_error_code() == "invalid_target");
    BOOST_TEST(r.ec == stampede::condition::permanent);
}

BOOST_AUTO_TEST_CASE(wrong_path_explained) { check_wrong_path(oidc_profile); }

BOOST_AUTO_TEST_CASE(json_body_rejected) { check_json_body_rejected(oidc_profile); }

BOOST_AUTO_TEST_CASE(short_lifetime_refreshed_ahead) { check_short_lifetime(oidc_profile); }

BOOST_AUTO_TEST_CASE(stampede_token_prints_token)
{
    node_server& server = server_for(oidc_profile);
    temp_directory home;
    const std::vector<std::string> args{"--auth-method",
                                        "client_secret_basic",
                                        "--token-url",
                                        server.endpoints().token_url,
                                        "--ca-file",
                                        server.endpoints().ca_file};

    const auto before = server.requests();
    const tool_result first = run_tool(home, args);
    BOOST_TEST_REQUIRE(first.exit_status == 0, first);
    BOOST_TEST(first.out.size() > 1u);
    BOOST_TEST(first.out.back() == '\n');
    BOOST_TEST(first.err == "");
    BOOST_TEST(server.requests() == before + 1);
    BOOST_TEST(logged(server.stats().last(), "authorization") == "basic");

    // The second run takes the token from the cache.
    const tool_result second = run_tool(home, args);
    BOOST_TEST(second.exit_status == 0, second);
    BOOST_TEST(second.out == first.out);
    BOOST_TEST(server.requests() == before + 1);

    // Another scope or method is another cache entry, so another request.
    auto scoped = args;
    scoped.insert(scoped.end(), {"--scope", "api:read"});
    const tool_result third = run_tool(home, scoped);
    BOOST_TEST(third.exit_status == 0, third);
    BOOST_TEST(third.out != first.out);
    BOOST_TEST(server.requests() == before + 2);
    BOOST_TEST(parameter(server.stats().last(), "scope") == "api:read");

    auto post = args;
    post[1] = "client_secret_post";
    const tool_result fourth = run_tool(home, post);
    BOOST_TEST(fourth.exit_status == 0, fourth);
    BOOST_TEST(fourth.out != first.out);
    BOOST_TEST(server.requests() == before + 3);
    BOOST_TEST(logged(server.stats().last(), "authorization") == "none");
}

BOOST_AUTO_TEST_CASE(stampede_token_disallowed_scope_exits_3)
{
    node_server& server = server_for(oidc_profile);
    temp_directory home;

    const auto before = server.requests();
    const tool_result result =
        run_tool(home, {"--auth-method", "client_secret_post", "--scope", "openid", "--token-url",
                        server.endpoints().token_url, "--ca-file", server.endpoints().ca_file});
    BOOST_TEST(result.exit_status == 3, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "invalid_scope"), result);
    BOOST_TEST(contains(result.err, "Check --scope"), result);
    BOOST_TEST(!contains(result.err, "Check the client id and secret"), result);
    BOOST_TEST(server.requests() == before + 1);
}

BOOST_AUTO_TEST_CASE(stampede_token_wrong_secret_exits_3)
{
    node_server& server = server_for(oidc_profile);
    temp_directory home;
    const fs::path credentials = home.path() / "credentials";
    write_private_file(credentials,
                       "client_id=" + std::string(cli_client.id) + "\nclient_secret=wrong-3Kq\n");

    const auto before = server.requests();
    const tool_result result =
        run_tool(home, {"--auth-method", "client_secret_basic", "--credentials-file",
                        credentials.string(), "--token-url", server.endpoints().token_url,
                        "--ca-file", server.endpoints().ca_file});
    BOOST_TEST(result.exit_status == 3, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "invalid_client"), result);
    BOOST_TEST(!contains(result.err, "wrong-3Kq"), result);
    BOOST_TEST(server.requests() == before + 1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(oauth2_server)

BOOST_AUTO_TEST_CASE(basic_gets_token)
{
    check_token_with(oauth2_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(post_gets_token)
{
    check_token_with(oauth2_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(reserved_secret_post_only) { check_reserved_secret(oauth2_profile); }

BOOST_AUTO_TEST_CASE(wrong_secret_basic)
{
    check_wrong_secret(oauth2_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(wrong_secret_post)
{
    check_wrong_secret(oauth2_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(unknown_client_rejected) { check_unknown_client(oauth2_profile); }

BOOST_AUTO_TEST_CASE(scope_granted_basic)
{
    check_scope(oauth2_profile, client_auth_method::client_secret_basic);
}

BOOST_AUTO_TEST_CASE(scope_granted_post)
{
    check_scope(oauth2_profile, client_auth_method::client_secret_post);
}

BOOST_AUTO_TEST_CASE(absent_scope_means_requested)
{
    node_server& server = server_for(oauth2_profile);
    auto settings =
        settings_for(oauth2_profile, silent_scope_client, client_auth_method::client_secret_post);
    settings.scope = "api:read";

    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(r.token.scope() == "api:read");
    BOOST_TEST(parameter(server.stats().last(), "scope") == "api:read");
}

BOOST_AUTO_TEST_CASE(disallowed_scope_rejected) { check_disallowed_scope(oauth2_profile); }

BOOST_AUTO_TEST_CASE(parameters_arrive_decoded)
{
    check_parameters_decoded(oauth2_profile);

    node_server& server = server_for(oauth2_profile);
    auto settings =
        settings_for(oauth2_profile, basic_client, client_auth_method::client_secret_basic);
    settings.resource = std::string(interop_resource);
    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(parameter(server.stats().last(), "resource") == interop_resource);
}

BOOST_AUTO_TEST_CASE(form_encoded_response_parsed)
{
    node_server& server = server_for(oauth2_profile);
    auto settings =
        settings_for(oauth2_profile, basic_client, client_auth_method::client_secret_basic);
    settings.token_url = server.url_with_path("/token-form");
    settings.scope = "api:write";

    const fetch_result r = fetch(settings);
    BOOST_TEST_REQUIRE(!r.ec, r);
    BOOST_TEST(!r.token.value().empty());
    BOOST_TEST(r.token.token_type() == "Bearer");
    BOOST_TEST(r.token.scope() == "api:write");
    const auto left = r.token.expires_at() - std::chrono::steady_clock::now();
    BOOST_TEST((left > 500s), "expires_in from the form body was not used");
    BOOST_TEST(contains(logged(server.stats().last(), "path"), "/token-form"));
}

BOOST_AUTO_TEST_CASE(wrong_path_explained)
{
    check_wrong_path(oauth2_profile);

    // This server's router sends plain text for an unknown path.
    node_server& server = server_for(oauth2_profile);
    auto settings =
        settings_for(oauth2_profile, basic_client, client_auth_method::client_secret_basic);
    settings.token_url = server.url_with_path("/oauth/token");
    const fetch_result r = fetch(settings);
    BOOST_TEST(r.ec == stampede::make_http_error(404), r);
    BOOST_TEST(contains(r.diag.client_message(), "text/plain"), r);
    BOOST_TEST(contains(r.diag.client_message(), "not JSON"), r);
    BOOST_TEST(r.diag.server_message() == "Cannot POST /oauth/token");
}

BOOST_AUTO_TEST_CASE(json_body_rejected) { check_json_body_rejected(oauth2_profile); }

BOOST_AUTO_TEST_CASE(short_lifetime_refreshed_ahead) { check_short_lifetime(oauth2_profile); }

BOOST_AUTO_TEST_SUITE_END()
