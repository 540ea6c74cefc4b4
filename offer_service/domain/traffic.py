"""Invalid traffic: known bots, prefetch and prerender requests, and offer actions without an
impression.

Such events are stored like any other (never dropped: the merchant can see them) with a reason,
and the measurement report and the learned P(accept) leave them out. Three reasons:
- `bot`: the request's User-Agent names a crawler, a headless or automated browser, a
  monitoring probe or a generic HTTP library (a shopper's browser sends none of these);
- `prefetch`: the browser fetched it speculatively (`Sec-Purpose: prefetch` or `prerender`,
  `Purpose: prefetch`, `X-Moz: prefetch`, `X-Purpose: preview`): nobody may ever see that page;
- `no_impression`: a click, add, accept or decline of an offer the same visitor never had a valid
  impression of in the `match_window_ms` before (decided by the store as it records
  the event, so it holds across every instance).

Classifying a request is one pass over its raw headers and, for a User-Agent not seen lately,
a look at its words; answers are cached by User-Agent, since a store's traffic repeats a few
hundred of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

from offer_service.types import DAY_MS

Flag = Literal["bot", "prefetch", "no_impression"]
BOT: Final = "bot"
PREFETCH: Final = "prefetch"
NO_IMPRESSION: Final = "no_impression"
REASONS: tuple[Flag, ...] = (BOT, PREFETCH, NO_IMPRESSION)
# Rates no shopper reaches (`RateLimits`, counted by serving/event_rates.py): an event past one
# is stored with the reason, and left out like the others. The report lists them when they occur.
VISITOR_RATE: Final = "visitor_rate"  # one visitor's events
ADDRESS_VISITORS: Final = "address_visitors"  # new visitors from one address
OFFER_IMPRESSIONS: Final = "offer_impressions"  # impressions of one offer from one address

# Event types that act on an offer and so need an impression of it before them.
NEEDS_IMPRESSION = frozenset(("click", "add", "accept", "decline"))
# How far back an impression of the same offer and visitor is looked for: a day on the web;
# an email or SMS is read days after it was sent, so its offers' clicks look back as far as its
# journey runs.
IMPRESSION_MATCH_WINDOW_MS = DAY_MS
MESSAGE_MATCH_WINDOW_MS = 30 * DAY_MS
_MESSAGE_SURFACES = frozenset(("email", "sms"))


def match_window_ms(surface: str) -> int:
    """How long an impression on `surface` makes actions on its offer valid."""
    return MESSAGE_MATCH_WINDOW_MS if surface in _MESSAGE_SURFACES else IMPRESSION_MATCH_WINDOW_MS


# User-Agents that are not shoppers, by the names they carry (one word of the lower-cased
# User-Agent, its version after a "/" left out). Maintained by hand from the crawler lists the
# search, SEO, social, AI and monitoring vendors publish.
_BOT_GROUPS = (
    # search engines
    "googlebot adsbot-google mediapartners-google google-inspectiontool googleother"
    " storebot-google feedfetcher-google apis-google google-read-aloud duplexweb-google"
    " bingbot bingpreview msnbot adidxbot slurp duckduckbot duckassistbot baiduspider"
    " yandexbot yandeximages yandexmetrika sogou exabot seznambot applebot petalbot yeti"
    " qwantbot mojeekbot",
    # SEO and marketing crawlers
    " ahrefsbot ahrefssiteaudit semrushbot siteauditbot mj12bot dotbot rogerbot blexbot"
    " dataforseobot serpstatbot barkrowler megaindex screaming sitebulb seokicks awariobot",
    # link previews and social networks
    " facebookexternalhit facebookcatalog meta-externalagent meta-externalfetcher twitterbot"
    " linkedinbot slackbot slack-imgproxy discordbot telegrambot whatsapp pinterestbot"
    " redditbot embedly skypeuripreview vkshare iframely bitlybot",
    # AI crawlers
    " gptbot chatgpt-user oai-searchbot claudebot claude-web claude-user anthropic-ai ccbot"
    " perplexitybot perplexity-user bytespider amazonbot diffbot cohere-ai youbot"
    " imagesiftbot omgili timpibot",
    # headless and automated browsers, performance and uptime probes
    " headlesschrome phantomjs slimerjs selenium webdriver puppeteer playwright lighthouse"
    " chrome-lighthouse pagespeed gtmetrix pingdom uptimerobot statuscake site24x7"
    " newrelicpinger datadog catchpoint checkly uptime-kuma nagios zabbix blackbox"
    " elb-healthchecker kube-probe googlehc amazon-route53-health-check"
    " cloudflare-healthchecks",
    # generic HTTP clients and scrapers
    " curl wget python-requests python-urllib python-httpx aiohttp httpie go-http-client"
    " java okhttp apache-httpclient libwww-perl lwp php guzzlehttp ruby faraday axios"
    " node-fetch undici scrapy colly httrack postmanruntime insomnia powershell",
)
BOT_NAMES = frozenset(name for group in _BOT_GROUPS for name in group.split())
# Self-declared: a word ending in "bot" (except phone makers that do), or naming a crawler.
_BOT_SUFFIX = "bot"
_NOT_BOTS = frozenset(("cubot",))
_BOT_PARTS = ("crawler", "spider", "scraper", "headless")
_WORD = re.compile(r"[a-z][a-z0-9_-]*")

_UA = b"user-agent"
# Headers a browser sets on speculative requests, with the values that mean "speculative".
_WATCHED = frozenset((_UA, b"sec-purpose", b"purpose", b"x-moz", b"x-purpose"))
_PREFETCH_VALUES = (b"prefetch", b"prerender", b"preview")
# User-Agents remembered; past this the cache starts over (a flood of distinct ones).
_UA_CACHE_MAX = 4096
_ua_cache: dict[bytes, bool] = {}


def is_bot(user_agent: str) -> bool:
    """Whether a User-Agent belongs to a known bot (an empty one does not: nothing is known).
    Words, not substrings: a name inside another word (a phone model) does not count."""
    low = user_agent.lower()
    if "+http" in low:  # "(compatible; SomeBot/1.0; +https://...)": browsers never say this
        return True
    for word in _WORD.findall(low):
        if word in BOT_NAMES or any(part in word for part in _BOT_PARTS):
            return True
        if word.endswith(_BOT_SUFFIX) and word not in _NOT_BOTS:
            return True
    return False


def classify(headers: Iterable[tuple[bytes, bytes]]) -> Flag | None:
    """The invalid-traffic reason of a request from its raw ASGI headers, or None."""
    bot = False
    for name, value in headers:
        if name in _WATCHED:
            if name == _UA:
                found = _ua_cache.get(value)
                if found is None:
                    if len(_ua_cache) >= _UA_CACHE_MAX:
                        _ua_cache.clear()
                    found = _ua_cache[value] = is_bot(value.decode("latin-1"))
                bot = found
            elif any(v in value.lower() for v in _PREFETCH_VALUES):
                return PREFETCH
    return BOT if bot else None
