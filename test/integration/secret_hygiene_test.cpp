// Secret hygiene against the in-process emulator over TLS, with the SDK's logger at trace.
//
// Each case drives the token source (and the API client for the 401 path) through one
// outcome: successful fetches, a wrong secret, a hostile 400 that echoes the secret and a
// token, a 503, and a read timeout. Then it checks every text the SDK produced or can
// print: log lines, error messages, what(), diagnostics, and the printed settings, tokens
// and counters. None may contain the client secret or a token the SDK obtained, as is,
// percent-encoded, or base64 / base64url encoded (also as part of `client_id:secret`).

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE secret_hygiene
#include <boost/test/unit_test.hpp>

#include <emulator.hpp>
#include <stampede/api_client.hpp>
#include <stampede/error.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;
namespace emulator = stampede::emulator;

using boost::system::error_code;
using namespace std::chrono_literals;

namespace {

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

constexpr std::string_view client_id = "hygiene-client";
constexpr std::string_view client_secret = "hygiene-secret-Vx93kQ";
constexpr std::string_view wrong_secret = "wrong-secret-Pq42Lm";

// A file name in the temporary directory, unique to this process and call, removed on exit.
class temp_file {
public:
    temp_file()
    {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("stampede-hygiene-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter++) + ".pem");
    }
    ~temp_file()
    {
        std::error_code ignored;
        std::filesystem::remove(path_, ignored);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;

    std::string string() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

// The SDK's log lines, from any thread. The sink may outlive the sources, so it shares
// ownership of the lines.
struct log_capture {
    struct lines_type {
        std::mutex mutex;
        std::vector<std::string> lines;
    };
    std::shared_ptr<lines_type> shared = std::make_shared<lines_type>();

    stampede::logger logger() const
    {
        stampede::logger lg;
        lg.level = stampede::log_level::trace;
        lg.sink = [shared = shared](stampede::log_level level, std::string_view line) {
            std::lock_guard lock(shared->mutex);
            shared->lines.push_back(std::string(stampede::to_string(level)) + " " +
                                    std::string(line));
            // Set STAMPEDE_TEST_LOG to see the SDK's records while a test runs.
            if (std::getenv("STAMPEDE_TEST_LOG") != nullptr) {
                std::clog << shared->lines.back() << '\n';
            }
        };
        return lg;
    }

    std::vector<std::string> snapshot() const
    {
        std::lock_guard lock(shared->mutex);
        return shared->lines;
    }
};

std::string encode_base64(std::string_view bytes, bool url)
{
    const std::string_view alphabet =
        url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (const char c : bytes) {
        bits = (bits << 8) | static_cast<unsigned char>(c);
        bit_count += 8;
        while (bit_count >= 6) {
            bit_count -= 6;
            out += alphabet[(bits >> bit_count) & 0x3f];
        }
    }
    if (bit_count > 0) {
        out += alphabet[(bits << (6 - bit_count)) & 0x3f];
    }
    return out;
}

std::string percent_encode(std::string_view text)
{
    std::string out;
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (std::isalnum(byte) != 0) {
            out += c;
        } else {
            char escaped[4];
            std::snprintf(escaped, sizeof escaped, "%%%02X", byte);
            out += escaped;
        }
    }
    return out;
}

// A value that must not appear, in each of its encoded forms, with a name for messages.
struct forbidden {
    std::string name;
    std::vector<std::string> forms;
};

forbidden forbid(std::string name, std::string_view value, std::string_view id_prefix = {})
{
    forbidden f{std::move(name), {std::string(value)}};
    if (value.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") !=
        std::string_view::npos) {
        f.forms.push_back(percent_encode(value));
    }
    f.forms.push_back(encode_base64(value, false));
    f.forms.push_back(encode_base64(value, true));
    if (!id_prefix.empty()) {
        const std::string basic = std::string(id_prefix) + ":" + std::string(value);
        f.forms.push_back(encode_base64(basic, false));
        f.forms.push_back(encode_base64(basic, true));
    }
    return f;
}

// Every text the SDK produced in one case, with where it came from.
class text_collector {
public:
    void add(std::string origin, std::string text)
    {
        texts_.emplace_back(std::move(origin), std::move(text));
    }

    void add(const std::string& origin, const stampede::diagnostics& diag)
    {
        add(origin + " client_message", diag.client_message());
        add(origin + " server_message", diag.server_message());
        add(origin + " server_error_code", diag.server_error_code());
    }

    void add_error(const std::string& origin, const error_code& ec)
    {
        add(origin + " message", ec.message());
        std::ostringstream printed;
        printed << ec;
        add(origin + " printed", printed.str());
    }

    void add_logs(const log_capture& log)
    {
        for (const std::string& line : log.snapshot()) {
            add("log line", line);
        }
    }

    template <class Printable>
    void add_printed(std::string origin, const Printable& value)
    {
        std::ostringstream printed;
        printed << value;
        add(std::move(origin), printed.str());
    }

    // Checks every text against every forbidden value. A message names the value, never
    // shows it, and shows the text with the value replaced.
    void check(const std::vector<forbidden>& values) const
    {
        BOOST_TEST(!texts_.empty());
        for (const auto& [origin, text] : texts_) {
            for (const forbidden& value : values) {
                for (const std::string& form : value.forms) {
                    BOOST_TEST(text.find(form) == std::string::npos,
                               value.name << " appears in " << origin << ": "
                                          << masked(text, form, value.name));
                }
            }
        }
    }

    // Checks that no text contains a run of `length` or more base64url characters, the
    // shape of the emulator's tokens (32 random bytes, 43 characters). It catches tokens
    // that the test cannot name, such as one a hostile server made up and echoed.
    void check_no_token_shaped_text(std::size_t length) const
    {
        const auto is_token_char = [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
        };
        for (const auto& [origin, text] : texts_) {
            std::size_t run = 0;
            std::size_t longest = 0;
            for (char c : text) {
                run = is_token_char(c) ? run + 1 : 0;
                longest = std::max(longest, run);
            }
            BOOST_TEST(longest < length, origin << " contains a token-shaped run of " << longest
                                                << " characters");
        }
    }

    std::size_t size() const { return texts_.size(); }

private:
    static std::string masked(std::string text, const std::string& form, const std::string& name)
    {
        for (auto pos = text.find(form); pos != std::string::npos; pos = text.find(form, pos)) {
            text.replace(pos, form.size(), "<" + name + ">");
            pos += name.size() + 2;
        }
        return text;
    }

    std::vector<std::pair<std::string, std::string>> texts_;
};

// An emulator with one client, a token source and an API client on one io_context.
struct hygiene_env {
    hygiene_env()
    {
        emulator::options opts;
        opts.clients = {{std::string(client_id), std::string(client_secret)}};
        opts.cert_out = cert_file.string();
        opts.token_rate = {100000, std::chrono::seconds(1)};
        opts.api_rate = {100000, std::chrono::seconds(1)};
        server = std::make_unique<emulator::server>(std::move(opts));
        server->start();
    }

    ~hygiene_env() { server->stop(); }

    stampede::token_source_settings settings(std::string_view secret = client_secret)
    {
        stampede::token_source_settings s;
        s.client_id = client_id;
        s.client_secret = stampede::secret_string(secret);
        s.token_url = server->token_url();
        s.transport.ca_file = cert_file.string();
        s.backoff.initial_delay = 10ms;
        s.backoff.min_delay = 5ms;
        s.backoff.max_delay = 20ms;
        s.logger = log.logger();
        return s;
    }

    stampede::api_client_settings api_settings()
    {
        stampede::api_client_settings s;
        s.base_url = server->base_url();
        s.transport.ca_file = cert_file.string();
        s.rate_limit = {1000, 1ms};
        s.backoff.initial_delay = 10ms;
        s.backoff.min_delay = 5ms;
        s.backoff.max_delay = 20ms;
        s.logger = log.logger();
        return s;
    }

    // Runs `body` as a coroutine until it ends. `run()` would not return while a token
    // source keeps a refresh timer, so this runs one handler at a time.
    void run(std::function<asio::awaitable<void>()> body)
    {
        bool finished = false;
        std::exception_ptr failure;
        asio::co_spawn(io, body(), [&](std::exception_ptr e) {
            failure = e;
            finished = true;
        });
        io.restart();
        while (!finished) {
            if (io.run_one() == 0) {
                BOOST_FAIL("io_context ran out of work before the coroutine finished");
            }
        }
        if (failure) {
            std::rethrow_exception(failure);
        }
    }

    // Gets a token with token(), so that a failure arrives as error_with_diagnostics, and
    // records what the failure shows.
    void fetch_expecting_failure(stampede::token_source& source, const std::string& origin)
    {
        bool threw = false;
        run([&]() -> asio::awaitable<void> {
            try {
                (void)co_await source.token();
            } catch (const stampede::error_with_diagnostics& e) {
                threw = true;
                texts.add(origin + " what()", e.what());
                texts.add_error(origin + " code", e.code());
                texts.add(origin, e.get_diagnostics());
            }
        });
        BOOST_TEST(threw, origin << " did not fail");
    }

    // Gets a token and remembers it as forbidden text.
    stampede::access_token fetch_token(stampede::token_source& source)
    {
        stampede::access_token token;
        run([&]() -> asio::awaitable<void> {
            auto [ec, result] = co_await source.async_token(as_awaitable);
            BOOST_TEST_REQUIRE(!ec, ec.message());
            token = std::move(result);
        });
        remember(token);
        return token;
    }

    void remember(const stampede::access_token& token)
    {
        const std::string name = "token " + std::to_string(values.size());
        values.push_back(forbid(name, token.value()));
        texts.add_printed("printed " + name, token);
    }

    void check(stampede::token_source& source)
    {
        texts.add_logs(log);
        texts.add_printed("printed settings", source.settings());
        texts.add_printed("printed stats", source.stats());
        if (auto view = source.try_token()) {
            texts.add_printed("printed token view", *view);
        }
        texts.check(values);
        BOOST_TEST_MESSAGE("checked " << texts.size() << " texts against " << values.size()
                                      << " secret values");
    }

    temp_file cert_file;
    std::unique_ptr<emulator::server> server;
    log_capture log;
    asio::io_context io;
    text_collector texts;
    std::vector<forbidden> values{forbid("the client secret", client_secret, client_id),
                                  forbid("the wrong secret", wrong_secret, client_id)};
};

} // namespace

BOOST_AUTO_TEST_CASE(successful_fetches_show_no_secret)
{
    hygiene_env env;
    stampede::token_source source(env.io, env.settings());
    const auto first = env.fetch_token(source);
    BOOST_TEST(source.invalidate(first));
    const auto second = env.fetch_token(source);
    BOOST_TEST(first.value() != second.value());

    env.check(source);
    bool saw_fetch = false;
    for (const std::string& line : env.log.snapshot()) {
        saw_fetch = saw_fetch || line.find("token fetched") != std::string::npos;
    }
    BOOST_TEST(saw_fetch);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(wrong_secret_shows_no_secret)
{
    hygiene_env env;
    stampede::token_source source(env.io, env.settings(wrong_secret));
    env.fetch_expecting_failure(source, "wrong secret");

    // The second call fails with the remembered error, without a request.
    env.fetch_expecting_failure(source, "wrong secret again");
    env.check(source);
    BOOST_TEST(source.stats().cooldown_rejections == 1u);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(echoed_secret_is_redacted)
{
    hygiene_env env;
    stampede::token_source source(env.io, env.settings());
    const auto token = env.fetch_token(source);
    source.invalidate(token);

    env.server->set_fault_script("echo-secret");
    env.fetch_expecting_failure(source, "echo-secret");
    env.check(source);

    // The emulator's description quotes the secret, so the redaction must be visible.
    bool saw_redaction = false;
    for (const std::string& line : env.log.snapshot()) {
        saw_redaction = saw_redaction || line.find("[redacted]") != std::string::npos;
    }
    BOOST_TEST(saw_redaction);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(echoed_unknown_token_is_masked)
{
    // On a cold start the echoed token is one the client never received, so it matches no
    // redactor pattern.
    hygiene_env env;
    stampede::token_source source(env.io, env.settings());
    env.server->set_fault_script("echo-secret");
    env.fetch_expecting_failure(source, "echo-secret on cold start");
    env.check(source);
    env.texts.check_no_token_shaped_text(40);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(server_error_shows_no_secret)
{
    hygiene_env env;
    auto settings = env.settings();
    settings.backoff.max_attempts = 2;
    stampede::token_source source(env.io, settings);
    const auto token = env.fetch_token(source);
    source.invalidate(token);

    env.server->set_fault_script("5xx-html:503*");
    env.fetch_expecting_failure(source, "503");
    env.server->set_fault_script("");
    env.fetch_token(source);
    env.check(source);
    BOOST_TEST(source.stats().retries >= 1u);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(read_timeout_shows_no_secret)
{
    hygiene_env env;
    auto settings = env.settings();
    settings.transport.read_timeout = 200ms;
    settings.backoff.max_attempts = 1;
    stampede::token_source source(env.io, settings);
    const auto token = env.fetch_token(source);
    source.invalidate(token);

    env.server->set_fault_script("stall");
    env.fetch_expecting_failure(source, "stall");
    env.check(source);
    source.shutdown();
}

BOOST_AUTO_TEST_CASE(api_unauthorized_shows_no_secret)
{
    hygiene_env env;
    stampede::token_source source(env.io, env.settings());
    stampede::api_client client(env.io.get_executor(), source, env.api_settings());
    env.fetch_token(source);

    // Every API request is refused, so the client refreshes its token once and fails.
    env.server->set_api_fault_script("401*");
    stampede::diagnostics diag;
    error_code result;
    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_request(
            boost::beast::http::verb::get, "/v1/guests?limit=1", std::nullopt,
            stampede::request_options{}, diag, as_awaitable);
        result = ec;
        env.texts.add("401 response body", response.body);
    });
    BOOST_TEST(result == stampede::make_http_error(401));
    env.texts.add_error("401 code", result);
    env.texts.add("401", diag);
    env.texts.add_printed("printed api stats", client.stats());

    // The refresh fetched a second token, which must be hidden too.
    env.fetch_token(source);
    BOOST_TEST(client.stats().token_retries >= 1u);
    env.check(source);
    client.shutdown();
    source.shutdown();
}

// NOTE: fails today. The echo-secret reply quotes a working token that the SDK never
// received, so its redactor cannot know it, and the permanent-failure log line copies the
// server's description with that token into the sink, against the promise of
// stampede::logger. Enable this case once server text stays out of log records or
// token-shaped text is removed from it.
BOOST_AUTO_TEST_CASE(echoed_unknown_token_not_logged, *boost::unit_test::disabled())
{
    hygiene_env env;
    stampede::token_source source(env.io, env.settings());
    env.server->set_fault_script("echo-secret");
    env.fetch_expecting_failure(source, "echo-secret");

    // Emulator tokens are 43 base64url characters, and no other text has such a run.
    const auto has_token_shape = [](const std::string& text) {
        std::size_t run = 0;
        for (const char c : text) {
            const bool base64url =
                std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
            run = base64url ? run + 1 : 0;
            if (run >= 43) {
                return true;
            }
        }
        return false;
    };
    for (const std::string& line : env.log.snapshot()) {
        BOOST_TEST(!has_token_shape(line), "a token-shaped value appears in a log line");
    }
    source.shutdown();
}
