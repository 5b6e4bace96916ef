"""The offline reply classifier: what rules read well, in seven languages, with no LLM.

It reads a reply (`ReplyText`: subject, text, headers, sender, when it was sent, and the
kind `campaign_core.inbound.classify` gave it) and says:
- `bounce`: a delivery status notification (inbound's DSN reading), or a mail system's
  "undeliverable" notice;
- `out_of_office` with the return date (read with `dateparser` in the context of the
  message's Date, so "back on Monday" and "zurück am 12. Januar" land on a day; "until
  the 11th" returns the day after);
- `auto_reply`: RFC 3834 `Auto-Submitted`, `X-Autoreply`, `X-Autorespond`, `Precedence:
  auto_reply|bulk|junk`, Microsoft's and other vendors' headers, or an automatic text;
- `unsubscribe` asked in prose, anywhere in what the person wrote ("please don't remove
  me" is not one);
- `referral` (a cue and an address that is not the sender's), `not_interested` and
  `not_now` when the phrasing is unmistakable; anything else a person wrote is `unclear`.
Languages: English, German, French, Spanish, Portuguese, Dutch, Italian. Only the
person's own words count: quoted history (`>` lines, "On ... wrote:", "-----Original
Message-----", forwarded blocks, Outlook header blocks, in the seven languages) and the
signature are cut first. Pure: no I/O; `dateparser` is imported when a date is read.
The measured precision and recall are in docs/replies.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from campaign_core.inbound import AUTO_REPLY_HEADERS, InboundMessage, classify
from campaign_core.intents import Referral, ReplyClassification, ReplyIntent

if TYPE_CHECKING:
    from campaign_core.store.rows import ReplyRow

LANGS = ("en", "de", "fr", "es", "pt", "nl", "it")
#: The most of a reply's own words the rules read.
READ_CHARS = 20_000


@dataclass(frozen=True)
class ReplyText:
    """What the rules read of one reply. `kind` is inbound's reading (`reply`,
    `auto_reply`, `bounce`), when known; `sent_at` the message's Date (or when it came)."""

    subject: str = ""
    text: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    sender: str = ""
    sent_at: datetime | None = None
    kind: str | None = None

    @classmethod
    def of_message(cls, msg: InboundMessage) -> ReplyText:
        sent: datetime | None = None
        if msg.header("date"):
            try:
                sent = parsedate_to_datetime(msg.header("date"))
            except (TypeError, ValueError, IndexError):
                sent = None
        return cls(subject=msg.subject, text=msg.text, headers=msg.headers, sender=msg.from_,
                   sent_at=sent, kind=classify(msg).kind)

    @classmethod
    def of_row(cls, row: ReplyRow) -> ReplyText:
        """A stored reply: its first lines, its kind and the headers the desk kept
        (schema 15; none for older rows, whose header-borne automatic replies are known by
        the kind they were recorded with). The date is the Date header's, else when it came."""
        sent: datetime | None = None
        headers = dict(row.headers or {})
        if headers.get("date"):
            try:
                sent = parsedate_to_datetime(headers["date"])
            except (TypeError, ValueError, IndexError):
                sent = None
        if sent is None:
            try:
                sent = datetime.fromisoformat(row.received_at)
            except ValueError:
                sent = None
        return cls(subject=row.subject, text=row.text, headers=headers, sender=row.email,
                   sent_at=sent, kind=row.kind)


def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


# -- the person's own words ------------------------------------------------------------------

_WROTE = re.compile(
    r"^(?:on\b.{0,200}\bwrote|am\b.{0,200}\bschrieb\b.{0,200}|le\b.{0,200}\ba [ée]crit|"
    r"el\b.{0,200}\bescribi[óo]|em\b.{0,200}\bescreveu|op\b.{0,200}\bschreef\b.{0,200}|"
    r"il\b.{0,200}\bha scritto|.{0,200}<[^<>\s]+@[^<>\s]+>\s*(?:wrote|schrieb|a [ée]crit|"
    r"escribi[óo]|escreveu|schreef|ha scritto))\s*:?\s*$", re.IGNORECASE)
_ORIGINAL = _rx(
    r"^-{2,}\s*(?:original message|urspr[üu]ngliche nachricht|message d'origine|"
    r"mensaje original|mensagem original|oorspronkelijk bericht|messaggio originale)\s*-{2,}",
    r"^-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transf[ée]r[ée]|"
    r"mensaje reenviado|mensagem encaminhada|doorgestuurd bericht|messaggio inoltrato)",
    r"^(?:begin forwarded message|d[ée]but du message r[ée]exp[ée]di[ée]|"
    r"anfang der weitergeleiteten nachricht|inicio del mensaje reenviado|"
    r"in[íi]cio da mensagem encaminhada|begin doorgestuurd bericht|"
    r"inizio messaggio inoltrato)\s*:?$",
    r"^_{10,}$",
)
_HEADER_FROM = re.compile(r"^\*?(?:from|von|de|van|da)\s?\*?:", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\*?(?:sent|date|to|subject|gesendet|datum|an|betreff|envoy[ée]|[àa]|objet|enviado|"
    r"fecha|para|asunto|assunto|verzonden|aan|onderwerp|inviato|data|a|oggetto)\s?\*?:",
    re.IGNORECASE)
_SENT_FROM = _rx(
    r"^sent from my\b", r"^von meinem\b.{0,40}\bgesendet", r"^envoy[ée] (?:de|depuis) mon\b",
    r"^enviado (?:desde|do|de) (?:mi|meu)\b", r"^verzonden (?:vanaf|met) mijn\b",
    r"^inviato da\b", r"^get outlook for\b")
_CLOSING = re.compile(
    r"^(?:best|best regards|kind regards|warm regards|regards|many thanks|thanks|thank you|"
    r"cheers|all the best|sincerely|yours|mit freundlichen gr[üu](?:ß|ss)en|freundliche "
    r"gr[üu](?:ß|ss)e|viele gr[üu](?:ß|ss)e|beste gr[üu](?:ß|ss)e|liebe gr[üu](?:ß|ss)e|"
    r"gr[üu](?:ß|ss)e|lg|mfg|cordialement|bien cordialement|bien [àa] vous|salutations|"
    r"bonne journ[ée]e|saludos|un saludo|saludos cordiales|atentamente|cordiales saludos|"
    r"atenciosamente|cumprimentos|abra[çc]os?|um abra[çc]o|met vriendelijke groet(?:en)?|"
    r"vriendelijke groet(?:en)?|groet(?:en|jes)?|mvg|cordiali saluti|distinti saluti|"
    r"saluti|un saluto|buona giornata)[,.!]?$", re.IGNORECASE)


def own_words(text: str) -> str:
    """What the person wrote: without quoted (`>`) lines, without the history after an
    "On ... wrote:" or an original-message, forwarded or Outlook header block, and
    without the signature (after `-- `, a "sent from my phone" line or a closing)."""
    lines = text[:READ_CHARS * 4].replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        s = raw.strip().strip("*")
        nxt = next((x.strip() for x in lines[i + 1:i + 4] if x.strip()), "")
        if s.startswith(">"):
            i += 1
            continue
        joined = f"{s} {lines[i + 1].strip()}" if i + 1 < len(lines) else s
        if _WROTE.match(s) or (s and not s.endswith(":") and _WROTE.match(joined)
                               and joined.rstrip().endswith(":")):
            if nxt.startswith(">") or (not _WROTE.match(s) and lines[i + 1:i + 2] and any(
                    x.strip().startswith(">") for x in lines[i + 2:i + 4])):
                i += 1 if _WROTE.match(s) else 2
                continue
            break
        if _ORIGINAL.search(s):
            break
        if _HEADER_FROM.match(s) and any(_HEADER_NEXT.match(x.strip().strip("*"))
                                         for x in lines[i + 1:i + 5]):
            break
        if raw.rstrip() in ("--", "-- ") or raw.startswith("-- ") or _SENT_FROM.search(s):
            break
        if out and _CLOSING.match(s):
            break
        out.append(s)
        i += 1
    return "\n".join(out).strip()[:READ_CHARS]


def _subject_core(subject: str) -> str:
    return re.sub(r"^(?:\s*(?:re|aw|wg|fw|fwd|tr|rv|res|enc|antw|sv|r)\s*:\s*)+", "", subject,
                  flags=re.IGNORECASE).strip()


# -- headers ------------------------------------------------------------------------------------

def header_auto(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """(why a message is machine-made by its headers, or None; whether that is certain).

    `X-Auto-Response-Suppress` is weak: Exchange sets it on its out-of-office notices,
    but also on other mail; it counts only beside an automatic subject or text."""
    h = {k.lower(): v for k, v in headers.items()}
    auto = h.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto} (RFC 3834)", True
    for name in AUTO_REPLY_HEADERS:
        if name in h and h[name].strip().lower() not in ("no", "false"):
            return f"{name} header", True
    for name in ("precedence", "x-precedence"):
        value = h.get(name, "").strip().lower()
        if value in ("auto_reply", "bulk", "junk", "list"):
            return f"{name}: {value}", True
    if h.get("x-fc-machinegenerated", "").strip().lower() == "true":
        return "x-fc-machinegenerated header", True
    if "autoresponder" in h.get("x-post-messageclass", "").lower():
        return "x-post-messageclass: autoresponder", True
    if "x-auto-response-suppress" in h:
        return "x-auto-response-suppress header", False
    return None, False


# -- bounces -------------------------------------------------------------------------------------

_MAIL_SYSTEM = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.I)
_BOUNCE_TEXT = _rx(
    r"undeliverable|undelivered mail|delivery (?:status notification \(failure\)|has failed|"
    r"failure)|mail delivery (?:failed|failure|subsystem)|returned mail|could not be delivered|"
    r"address (?:not found|rejected)|user unknown|mailbox (?:unavailable|not found|full)",
    r"unzustellbar|nicht zugestellt|zustellung fehlgeschlagen",
    r"non remis|[ée]chec de (?:la )?(?:remise|distribution)|n'a pas pu [êe]tre (?:remis|distribu)",
    r"no se (?:puede|pudo) entregar|no entregado|error de entrega",
    r"n[ãa]o (?:foi )?entregue|falha (?:na|de) entrega",
    r"onbestelbaar|niet (?:afgeleverd|bezorgd)",
    r"mancato recapito|non recapitabile|impossibile recapitare",
)


# -- unsubscribe ---------------------------------------------------------------------------------

#: Requests that carry their own negation ("don't email me again"): no negation check.
_UNSUB_FIRM = _rx(
    # en
    r"\b(?:don'?t|do not|no longer|never)\s+(?:want|wish|need|care)\s+to\s+(?:receive|get|"
    r"hear|be (?:contacted|emailed|e-mailed|mailed))",
    r"\b(?:don'?t|do not|never)\s+(?:ever\s+)?(?:email|e-mail|contact|write to|message|mail|"
    r"spam)\s+(?:me|us)(?:\s+(?:again|anymore|any more|further))?\b",
    r"\bno (?:more|further) (?:emails|e-mails|mails|messages|contact)\b",
    r"\bstop (?:emailing|e-mailing|contacting|mailing|sending|writing|spamming|messaging)\b",
    r"\b(?:not|never) (?:to )?(?:contact|email|e-mail) (?:me|us) again\b",
    # de
    r"\bkeine (?:weiteren |neuen )?(?:e-?mails|mails|nachrichten|zusendungen|werbung|"
    r"anfragen|kontaktaufnahmen?)(?: mehr)?\b",
    r"\bnicht mehr (?:kontaktieren|anschreiben|anmailen|schreiben|belästigen|kontaktiert|"
    r"angeschrieben|angemailt)\b",
    r"\b(?:kontaktieren|schreiben|mailen|belästigen)\s+sie\s+mich\s+(?:bitte\s+)?nicht\s+mehr",
    # fr
    r"\bne\s+(?:me\s+)?(?:contactez|[ée]crivez|envoyez|sollicitez)\s+plus\b",
    r"\bne\s+plus\s+(?:me\s+)?(?:contacter|[ée]crire|envoyer|solliciter)\b",
    r"\b(?:ne|n')\s*(?:souhaite|veux|d[ée]sire|voudrais)\s+plus\s+(?:recevoir|[êe]tre "
    r"(?:contact|sollicit))",
    r"\b(?:cessez|arr[êe]tez)\s+de\s+m'(?:envoyer|[ée]crire|contacter|solliciter)",
    # es
    r"\bno\s+(?:me\s+)?(?:contacten|escriban|env[íi]en|manden|vuelvan a (?:escribir|"
    r"contactar))(?:me)?\b",
    r"\bno\s+(?:quiero|deseo)\s+(?:seguir\s+)?recibir\b",
    r"\bdejen de (?:escribirme|enviarme|contactarme|mandarme)\b",
    r"\bno m[áa]s (?:correos|emails|e-mails|mensajes)\b",
    # pt
    r"\bn[ãa]o\s+(?:me\s+)?(?:contactem|contatem|enviem|mandem|escrevam)\s+mais\b",
    r"\bn[ãa]o\s+(?:quero|desejo)\s+(?:mais\s+)?receber\b",
    r"\bparem de (?:me )?(?:enviar|mandar|contactar|contatar|escrever)\b",
    r"\bn[ãa]o me (?:contacte|contate|contactem|contatem|escreva|escrevam) (?:mais|novamente)\b",
    # nl
    r"\bgeen (?:e-?mails|mails|berichten|mailtjes|nieuwsbrieven) meer\b",
    r"\bniet (?:meer|langer) (?:benaderd|gemaild|ge-?maild|gecontacteerd|mailen|contacteren)\b",
    r"\b(?:stop|stopt|stoppen) met (?:mailen|e-mailen|mailtjes|sturen|benaderen)\b",
    r"\bneem geen contact meer\b",
    # it
    r"\bnon\s+(?:voglio|desidero)\s+(?:pi[ùu]\s+)?ricevere\b",
    r"\bnon\s+(?:contattatemi|scrivetemi|mandatemi|inviatemi|contattarmi|scrivermi)\s+pi[ùu]\b",
    r"\bsmettete(?:la)? di (?:scrivermi|inviarmi|contattarmi|mandarmi)\b",
    r"\bnon\s+(?:mi\s+)?(?:contattate|scrivete|mandate|inviate)\s+pi[ùu]\b",
)
#: Requests a negation turns around ("please don't remove me").
_UNSUB_VERB = _rx(
    # en
    r"\bunsubscrib\w*", r"\bremove\s+(?:me|us|my\s+(?:e-?mail|address|name|details|data|"
    r"contact))\b", r"\btake\s+(?:me|us|my\s+\w+)\s+off\b", r"\bopt\s+(?:me\s+)?out\b",
    r"\b(?:delete|erase)\s+my\s+(?:data|details|e-?mail|address|contact|information)\b",
    r"\b(?:want|like|wish|ask|asking)\s+to\s+be\s+(?:removed|unsubscribed|taken off|deleted)\b",
    r"\boff\s+(?:your|the)\s+(?:mailing\s+)?(?:list|database)\b",
    # de
    r"\babmelden\b", r"\bmelden\s+sie\s+mich\s+(?:\w+\s+){0,5}?ab\b", r"\babmeldung\b",
    r"\baustragen\b", r"\btragen\s+sie\s+mich\s+(?:\w+\s+){0,5}?aus\b",
    r"\b(?:entfernen|streichen|löschen)\s+sie\s+(?:mich|meine\s+(?:daten|adresse|e-?mail))",
    r"\baus\s+(?:ihrem|ihrer|dem|der|eurem|eurer|ihren)\s+(?:e-?mail-?)?(?:verteiler|liste|"
    r"mailingliste|datenbank|newsletter|kontaktliste)",
    r"\blöschung\s+meiner\s+daten\b",
    # fr
    r"\bd[ée]sinscri\w*", r"\bd[ée]sabonn\w*",
    r"\b(?:retirez|supprimez|enlevez|effacez|rayez)-moi\b",
    r"\bme\s+(?:retirer|supprimer|d[ée]sinscrire|d[ée]sabonner|rayer|enlever)\b",
    r"\b(?:retirer|supprimer|effacer)\s+(?:mon adresse|mes (?:coordonn[ée]es|donn[ée]es))",
    # es
    r"\b(?:dar|darme|darnos|den|denme|d[ée]nme|darse)\s+de\s+baja\b",
    r"\b(?:elim[íi]nenme|elim[íi]neme|qu[íi]tenme|b[óo]rrenme|s[áa]quenme)\b",
    r"\b(?:eliminar|borrar|quitar|sacar)(?:me|nos)?\s+de\s+(?:su|la|vuestra|sus)\s+"
    r"(?:lista|base de datos|listas)\b",
    r"\b(?:eliminen|borren|quiten|saquen)\s+mi\s+(?:correo|direcci[óo]n|email|e-mail|datos)\b",
    r"\bcancelar\s+(?:mi\s+)?suscripci[óo]n\b", r"\bdesuscrib\w*",
    # pt
    r"\bdescadastr\w*", r"\b(?:removam|remova|retirem|tirem|excluam|apaguem)-me\b",
    r"\bme\s+(?:removam|remova|remover|retirar|tirar|excluir|descadastrar)\b",
    r"\b(?:remover|retirar|tirar|excluir|apagar)\s+(?:o\s+)?meu\s+(?:e-?mail|endere[çc]o|"
    r"contato|contacto|cadastro)\b",
    r"\bcancelar\s+(?:a\s+)?(?:minha\s+)?(?:inscri[çc][ãa]o|subscri[çc][ãa]o)\b",
    # nl
    r"\bafmelden\b", r"\bmeld\s+(?:me|mij|ons)\s+(?:\w+\s+){0,4}?af\b", r"\buitschrijven\b",
    r"\bschrijf\s+(?:me|mij|ons)\s+(?:\w+\s+){0,4}?uit\b",
    r"\bverwijder\s+(?:me|mij|ons|mijn\s+(?:e-?mailadres|gegevens|adres))\b",
    r"\bhaal\s+(?:me|mij|ons)\s+(?:\w+\s+){0,3}?(?:van|uit)\s+(?:de|uw|jullie|je)\s+"
    r"(?:lijst|mailinglijst|bestand|database)",
    # it
    r"\b(?:cancellatemi|cancellami|cancellarmi|rimuovetemi|rimuovermi|rimuovimi|toglietemi|"
    r"toglimi|togliermi)\b",
    r"\b(?:rimuovere|cancellare|eliminare)\s+(?:il mio (?:indirizzo|nominativo|contatto)|"
    r"i miei dati)\b",
    r"\bdisiscriv\w*", r"\bcancellazione\s+(?:dalla|della)\s+(?:lista|mailing|newsletter)",
)
_ONE_WORD_UNSUB = re.compile(
    r"^(?:stop|stopp|remove|unsubscribe|abmelden|austragen|d[ée]sinscription|d[ée]sabonner|"
    r"baja|remover|descadastrar|afmelden|uitschrijven|cancellami|disiscrivi|cancellazione)"
    r"[.!]*$", re.IGNORECASE)
_NEGATION = re.compile(
    r"\b(?:don'?t|do not|didn'?t|did not|never|not|no need to|nicht|nie|niemals|ne|n'|pas|"
    r"jamais|no|nunca|n[ãa]o|niet|nooit|non|mai)\b|\bn'", re.IGNORECASE)
_AFTER_NEGATION = re.compile(r"^\s*(?:niet|nicht|pas)\b", re.IGNORECASE)
_CLAUSE_END = re.compile(
    r"[.!?;,:\n]|\s[-\u2013]\s|\b(?:but|so|and|then|also|aber|und|also|doch|mais|et|donc|pero|y|"
    r"as[íi] que|mas|e|ent[ãa]o|maar|en|dus|ma|quindi|per[òo])\b", re.IGNORECASE)


def _negated(text: str, start: int, end: int) -> bool:
    """Whether a negation governs the request at text[start:end]: in the words before it
    in its clause (up to five), in the match itself, or as the particle right after."""
    before = text[max(0, start - 80):start]
    cuts = list(_CLAUSE_END.finditer(before))
    if cuts:
        before = before[cuts[-1].end():]
    before = " ".join(before.split()[-5:])
    return bool(_NEGATION.search(before) or _NEGATION.search(text[start:end])
                or _AFTER_NEGATION.match(text[end:end + 12]))


def unsubscribe_request(words: str, subject: str = "") -> str | None:
    """The phrase that asks to be unsubscribed, or None."""
    if _ONE_WORD_UNSUB.match(" ".join(words.split())) or _ONE_WORD_UNSUB.match(
            _subject_core(subject)):
        return "a one-word request"
    for source in (words, _subject_core(subject)):
        firm = _UNSUB_FIRM.search(source)
        if firm:
            return firm.group(0)
        for m in _UNSUB_VERB.finditer(source):
            if not _negated(source, m.start(), m.end()):
                return m.group(0)
    return None


# -- out of office and automatic replies ---------------------------------------------------------

_AUTO_SUBJECT = _rx(
    r"automatic reply|auto(?:matic)?[- ]?(?:reply|response|respon[sd]er)|autoreply|"
    r"out of (?:the )?office|\booo\b|vacation|on leave",
    r"abwesenheit|abwesend|automatische antwort|urlaub|nicht im b[üu]ro",
    r"r[ée]ponse automatique|absence|absent(?:e)?\b|vacances|cong[ée]s?\b",
    r"respuesta autom[áa]tica|fuera de la oficina|ausente|vacaciones",
    r"resposta autom[áa]tica|aus[êe]ncia|fora do escrit[óo]rio|f[ée]rias",
    r"automatisch antwoord|afwezig|vakantie|niet op kantoor",
    r"risposta automatica|fuori ufficio|assente|ferie",
)
#: An absence said in words.
_ABSENT = _rx(
    r"\bout of (?:the )?office\b|\booo\b|\bon (?:annual |parental |maternity |paternity |sick "
    r"|medical |study |personal )?leave\b|\bon (?:vacation|holidays?|annual leave|pto)\b|"
    r"\baway from (?:the office|my desk|work|my email)\b|\bback in the office\b|"
    r"\b(?:i am|i'm|i will be|i'll be) "
    r"(?:currently |presently )?(?:away|out|travel(?:l)?ing|off)\b|\blimited (?:access to|"
    r"email|e-mail)\b|\bno access to (?:my )?e-?mail",
    r"\babwesend\b|\babwesenheit|\bnicht im (?:b[üu]ro|hause?)\b|\bau(?:ß|ss)er haus\b|"
    r"\bim urlaub\b|\burlaubsbedingt|\belternzeit\b|\bkrankheitsbedingt|\bnicht erreichbar\b|"
    r"\beingeschr[äa]nkte?n? zugriff|\bkeinen zugriff auf|\bwieder im b[üu]ro\b",
    r"\babsente?s?\b|\bde retour au bureau\b|\ben cong[ée]s?\b|\ben vacances\b|"
    r"\bhors du bureau\b|\bacc[èe]s limit[ée]|"
    r"\bcong[ée] (?:maternit[ée]|parental|maladie)",
    r"\bfuera de la oficina\b|\bde vuelta en la oficina\b|\bde vacaciones\b|\bausente\b|"
    r"\bacceso limitado\b|"
    r"\bde baja (?:m[ée]dica|por (?:maternidad|paternidad|enfermedad))",
    r"\bfora do escrit[óo]rio\b|\bde volta ao escrit[óo]rio\b|\bde f[ée]rias\b|\bausente\b|"
    r"\bacesso limitado\b|"
    r"\blicen[çc]a (?:maternidade|m[ée]dica|parental)",
    r"\bafwezig\b|\bweer op kantoor\b|\bniet (?:op kantoor|aanwezig|bereikbaar)\b|"
    r"\b(?:met|op) (?:vakantie|verlof)\b|"
    r"\bbeperkte? toegang\b",
    r"\bfuori (?:ufficio|sede)\b|\bdi nuovo in ufficio\b|\bin (?:ferie|vacanza|maternit[àa]|"
    r"congedo)\b|\bassente\b|"
    r"\baccesso limitato\b",
)
#: A return said in words (the sentence around it is where the return date is read).
_RETURN = _rx(
    r"\bback\b|\breturn(?:s|ing)?\b|\buntil\b|\btill\b|\bthrough\b|\bavailable again\b|"
    r"\breachable\b|\bresume\b",
    r"\bzur[üu]ck\b|\bwieder\b|\bbis\b|\berreichbar\b",
    r"\bretour\b|\breviendrai\b|\bjusqu|\bdisponible\b|\breprendrai\b",
    r"\bde vuelta\b|\bregres\w*|\bvolver[ée]\b|\bvuelvo\b|\breincorpor\w*|\bhasta\b",
    r"\bde volta\b|\bretorn\w*|\bregress\w*|\bvolto\b|\bat[ée]\b|\bdispon[íi]vel\b",
    r"\bterug\b|\bweer\b|\btot\b|\bt/m\b|\bbereikbaar\b",
    r"\brientr\w*|\bdi ritorno\b|\bdi nuovo\b|\bfino\b|\bdisponibile\b",
)
_AUTO_TEXT = _rx(
    r"\b(?:this is an? )?automat(?:ed|ic|ically generated) (?:reply|response|message|e-?mail|"
    r"notification)\b|\bauto-?generated\b|\bwe (?:have )?received your (?:e-?mail|message|"
    r"request|inquiry|enquiry|ticket)\b|\bdo not reply to this (?:e-?mail|message)\b|"
    r"\bthis (?:mailbox|address|inbox) is (?:no longer|not) (?:monitored|in use|active)\b|"
    r"\bticket (?:#|number|id|no\.?)\s*\w+",
    r"\bautomatische (?:antwort|nachricht|e-?mail|benachrichtigung)\b|\bautomatisch "
    r"(?:generiert|erstellt|versendet)\b|\bihre (?:nachricht|e-?mail|anfrage) (?:ist|wurde) "
    r"(?:bei uns )?eingegangen\b|\bbitte antworten sie nicht\b",
    r"\br[ée]ponse automatique\b|\bmessage automatique\b|\bnous avons (?:bien )?re[çc]u votre "
    r"(?:message|mail|e-mail|courriel|demande)\b|\bmerci de ne pas r[ée]pondre\b",
    r"\brespuesta autom[áa]tica\b|\bmensaje autom[áa]tico\b|\bhemos recibido (?:su|tu) "
    r"(?:mensaje|correo|solicitud|e-?mail)\b|\bno responda a este\b",
    r"\bresposta autom[áa]tica\b|\bmensagem autom[áa]tica\b|\brecebemos (?:a sua|sua|seu|o seu) "
    r"(?:mensagem|e-?mail|pedido|solicita[çc][ãa]o)\b",
    r"\bautomatisch (?:antwoord|bericht|gegenereerd)\b|\b(?:wij|we) hebben (?:uw|je|jouw) "
    r"(?:bericht|e-?mail|aanvraag|mail) (?:in goede orde )?ontvangen\b",
    r"\brisposta automatica\b|\bmessaggio automatico\b|\babbiamo ricevuto (?:il tuo|la tua|"
    r"il suo|la sua) (?:messaggio|e-?mail|richiesta)\b",
)
#: The person has left: an automatic reply that usually names who to write to instead.
_LEFT = _rx(
    r"\bno longer (?:with|at|works? (?:at|for|with)|employed|part of)\b|\bhas left\b|"
    r"\bleft the company\b",
    r"\bnicht mehr (?:im unternehmen|bei|f[üu]r|t[äa]tig|besch[äa]ftigt)\b|\bhat (?:das "
    r"unternehmen|uns|die firma) verlassen\b",
    r"\bne fait plus partie\b|\ba quitt[ée]\b|\bne travaille plus\b",
    r"\bya no (?:trabaja|forma parte|est[áa] en)\b|\bha dejado (?:la empresa|de trabajar)\b",
    r"\bj[áa] n[ãa]o (?:trabalha|faz parte)\b|\bn[ãa]o (?:trabalha|faz parte) mais\b|"
    r"\bdeixou (?:a empresa|de trabalhar)\b",
    r"\bniet (?:meer|langer) (?:werkzaam|in dienst|verbonden)\b|\bwerkt (?:hier )?niet meer\b|"
    r"\bheeft (?:het bedrijf|ons) verlaten\b",
    r"\bnon (?:lavora|fa) pi[ùu] (?:per|parte|presso|con)\b|\bha lasciato (?:l'azienda|la "
    r"societ[àa])\b",
)


# -- referral, not interested, not now ------------------------------------------------------------

_REFERRAL_CUE = _rx(
    r"\b(?:contact|reach out to|speak (?:to|with)|talk (?:to|with)|get in touch with|"
    r"email|e-mail|write to|forward(?:ed|ing)?|cc'?(?:ing|ed)?|loop(?:ing)? in|copying|"
    r"introduc\w*)\b|\bthe (?:right|best|correct) (?:person|contact)\b|\bhandles\b|"
    r"\bresponsible for\b|\bin charge of\b|\binstead\b",
    r"\bwenden sie sich\b|\bansprechpartner(?:in)?\b|\bzust[äa]ndig\b|\bkontaktieren sie\b|"
    r"\bweitergeleitet\b|\bleite\b.{0,40}\bweiter\b|\bschreiben sie\b",
    r"\bcontactez\b|\bcontacter\b|\badressez-vous\b|\b[ée]crivez [àa]\b|\bla bonne personne\b|"
    r"\binterlocut\w+|\bs'occupe\b|\ben charge\b|\bresponsable\b|\btransf[ée]r\w*",
    r"\bcontacte\b|\bcontactar\b|\bhable con\b|\bescriba a\b|\bdir[íi]jase\b|\bla persona "
    r"(?:indicada|adecuada|correcta)\b|\bencargad[oa]\b|\breenv\w+",
    r"\bfale com\b|\bentre em conta(?:c)?to\b|\bcontate\b|\bescreva para\b|\ba pessoa "
    r"(?:certa|indicada|correta)\b|\brespons[áa]vel\b|\bencaminh\w+",
    r"\bneem (?:dan |gerust )?contact op\b|\bjuiste persoon\b|\bverantwoordelijk\b|"
    r"\bcontactpersoon\b|\bdoorgestuurd\b|\bmail (?:naar|met)\b",
    r"\bcontatti\b|\bcontattare\b|\brivolg\w+|\bscriva a\b|\bla persona giusta\b|"
    r"\breferente\b|\bresponsabile\b|\bsi occupa\b|\binoltrat\w+",
    _LEFT.pattern,
)
_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9][\w.+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_NAME_BEFORE = re.compile(
    r"((?:[A-ZÀ-Þ][\w'\u2019-]+|(?:de|da|van|von|der|den|del|di|dos|du|la|le)\b)"
    r"(?:\s+(?:[A-ZÀ-Þ][\w'\u2019-]+|(?:de|da|van|von|der|den|del|di|dos|du|la|le)\b)){0,3})"
    r"\s*(?:\(|<|\[|:|,|-|\u2013|\bat\b|\bunter\b|\bà\b|\ben\b|\bem\b|\bvia\b|\bop\b|\ba\b)?\s*$")
_NOT_A_NAME = re.compile(
    r"^(?:please|contact|kontaktieren|bitte|merci|gracias|obrigad\w*|grazie|hi|hello|dear|"
    r"email|e-mail|mail|the|she|he|her|him|they|sie|er|il|elle|ella|ele|zij|hij|lei|lui|"
    r"our|unser\w*|notre|nuestr\w*|noss\w*|onze|nostr\w*|cc|to|an|frau|herr|mr|mrs|ms|"
    r"madame|monsieur|se[ñn]or\w*|senhor\w*|mevrouw|meneer|signor\w*|dott\w*|herrn?|"
    r"kolleg\w*|colleague\w*|coll[èe]gue\w*|colega\w*|collega\w*|ansprechpartner\w*|"
    r"chef\w*|leiter\w*|gesch[äa]ftsf[üu]hrer\w*|ceo|cto|cfo|coo|head|manager|director|"
    r"directeur\w*|directora?|diretora?|direttore|meinen?|meiner|my|mon|ma|mi|meu|minha|mijn|"
    r"mio|mia)$", re.I)

_NOT_INTERESTED = _rx(
    r"\bnot interested\b|\bno interest\b|\bwe(?:'re| are) (?:all )?set\b|\bwe already "
    r"(?:have|use|work with)\b|\bnot (?:a )?(?:fit|priority) for us\b|\bno(?:,)? thank you\b|"
    r"\bno(?:,)? thanks\b|\bnot for us\b|\bpass on this\b",
    r"\bkein(?:en)? (?:interesse|bedarf)\b|\bnicht interessiert\b|\bwir haben (?:bereits|schon)\b",
    r"\bpas int[ée]ress[ée]e?s?\b|\bne (?:sommes|suis) pas int[ée]ress|\bnous avons d[ée]j[àa]\b|"
    r"\bpas de besoin\b|\bnon merci\b",
    r"\bno (?:me|nos) interesa\b|\bno estamos interesad|\bno estoy interesad|\bya (?:tenemos|"
    r"contamos con|trabajamos con)\b",
    r"\bn[ãa]o (?:tenho|temos) interesse\b|\bn[ãa]o (?:estou|estamos) interessad|\bj[áa] "
    r"(?:temos|usamos|trabalhamos com)\b|\bsem interesse\b",
    r"\bgeen interesse\b|\bniet ge[ïi]nteresseerd\b|\bwe hebben al\b|\bgeen behoefte\b",
    r"\bnon (?:sono|siamo) interessat|\bnon (?:ci|mi) interessa\b|\babbiamo gi[àa]\b",
)
_LATER = _rx(
    r"\b(?:not|no) (?:right )?now\b|\bnot at (?:the|this) (?:moment|time)\b|\bnot (?:a |the )?"
    r"(?:good|right) time\b|\b(?:reach|get|circle|check|come) back (?:out )?(?:to me |to us )?"
    r"(?:in|after|next|around)\b|\btry (?:me|us) again\b|\b(?:reconnect|revisit|touch base|"
    r"follow up) (?:in|after|next|around)\b|\bmaybe (?:later|next)\b|\bnext (?:year|quarter)\b",
    r"\b(?:im moment|momentan|derzeit|aktuell|gerade) (?:nicht|kein)\b|\bsp[äa]ter\b|"
    r"\bmelden sie sich (?:gerne |doch )?(?:im|in|nach|ab|wieder)\b|\bn[äa]chstes jahr\b",
    r"\bpas (?:pour )?(?:le moment|maintenant)\b|\bplus tard\b|\brecontact\w+|"
    r"\bl'ann[ée]e prochaine\b",
    r"\b(?:ahora|de momento|por ahora|en este momento) no\b|\bm[áa]s adelante\b|"
    r"\bvuelva a contactar\w*|\bel a[ñn]o que viene\b|\bel pr[óo]ximo a[ñn]o\b",
    r"\b(?:no momento|agora|por agora|neste momento) n[ãa]o\b|\bmais (?:para a frente|tarde)\b|"
    r"\bpr[óo]ximo ano\b|\bvolte a (?:entrar em )?conta(?:c)?t\w*",
    r"\b(?:op dit moment|momenteel|nu) (?:niet|geen)\b|\blater (?:dit jaar|in|terug)\b|"
    r"\bvolgend jaar\b|\bneem\b.{0,30}\b(?:opnieuw|weer) contact\b",
    r"\b(?:al momento|per ora|in questo momento) non\b|\bpi[ùu] avanti\b|\bricontatt\w+|"
    r"\bl'anno prossimo\b",
)


# -- dates --------------------------------------------------------------------------------------

_MONTHS = {
    "en": "january february march april may june july august september october november december",
    "de": "januar jänner februar märz april mai juni juli august september oktober november "
          "dezember",
    "fr": "janvier février fevrier mars avril mai juin juillet août aout septembre octobre "
          "novembre décembre decembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre "
          "noviembre diciembre",
    "pt": "janeiro fevereiro março marco abril maio junho julho agosto setembro outubro "
          "novembro dezembro",
    "nl": "januari februari maart april mei juni juli augustus september oktober november "
          "december",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
          "dicembre",
}
_MONTH_ABBR = "jan feb mar apr jun jul aug sep sept oct okt nov dec dez mär"
_WEEKDAYS = (
    "monday tuesday wednesday thursday friday saturday sunday montag dienstag mittwoch "
    "donnerstag freitag samstag sonnabend sonntag lundi mardi mercredi jeudi vendredi samedi "
    "dimanche lunes martes miércoles miercoles jueves viernes sábado sabado domingo "
    "segunda-feira terça-feira terca-feira quarta-feira quinta-feira sexta-feira segunda terça "
    "quarta quinta sexta maandag dinsdag woensdag donderdag vrijdag zaterdag zondag lunedì "
    "lunedi martedì martedi mercoledì mercoledi giovedì giovedi venerdì venerdi sabato domenica")
_RELATIVE_DAYS = "tomorrow|morgen|demain|mañana|amanhã|amanha|domani"
_MONTH = "(?:" + "|".join(sorted({m for v in _MONTHS.values() for m in v.split()}
                                 | set(_MONTH_ABBR.split()), key=len, reverse=True)) + r")\.?"
_WEEKDAY = "(?:" + "|".join(sorted(set(_WEEKDAYS.split()), key=len, reverse=True)) + ")"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])"
_ORD = r"(?:st|nd|rd|th|er|e|º|°|\.)?"
_NUMERIC = rf"(?<![\d/.:-]){_DAY}[./-](?:1[0-2]|0?[1-9])(?:[./-](?:\d{{4}}|\d{{2}}))?\.?(?![\d/:]|\.\d)"
_ISO = r"(?<!\d)\d{4}-(?:1[0-2]|0[1-9])-(?:[12]\d|3[01]|0[1-9])(?!\d)"
_NAMED = (rf"(?:{_DAY}{_ORD}\s*(?:de\s+|of\s+)?{_MONTH}(?:\s+(?:de\s+)?\d{{4}})?|"
          rf"{_MONTH}\s+(?:the\s+)?{_DAY}{_ORD}(?:,?\s+\d{{4}})?)")
_DATE = re.compile(
    rf"(?:{_WEEKDAY},?\s+(?:(?:the|den|le|el|o|il|dia)\s+)?)?(?:{_ISO}|{_NAMED}|{_NUMERIC})|"
    rf"\b{_WEEKDAY}\b|\b(?:{_RELATIVE_DAYS})\b", re.IGNORECASE)
#: Said right before a date that ends an absence: the return is the day after it.
_UNTIL = re.compile(
    r"(?:\buntil|\btill|\btil|\bthrough|\bthru|\bbis(?:\s+(?:zum|einschlie(?:ß|ss)lich|"
    r"einschl\.|inklusive|inkl\.))?|\bjusqu'?\s*(?:au|[àa]|a)(?:\s+(?:inclus|le))?|"
    r"\bhasta(?:\s+el)?|\bat[ée](?:\s+(?:ao|o|dia|a))?|\btot(?:\s+en\s+met)?|\bt/m|"
    r"\bfino\s+(?:al|a|all')|\bal|\bau|\bto|\bthe|[-\u2013])\s*(?:the\s+|de\s+|dem\s+|el\s+|le\s+|"
    r"o\s+|dia\s+|il\s+)?(?:(?:" + _WEEKDAY + r"),?\s+(?:the\s+)?)?$", re.IGNORECASE)
_FROM = re.compile(r"(?:\bfrom|\bvom|\bvon|\bdu|\bdesde|\bdel|\bdal|\bdall'|\bvan|\bsince|"
                   r"\bdepuis)\s*(?:the\s+)?(?:(?:" + _WEEKDAY + r"),?\s+)?$", re.IGNORECASE)
_SENTENCE = re.compile(r"\n+|(?<=[!?])\s+|(?<=[^\d\s.]{4}\.)\s+(?=[A-ZÄÖÜÀ-Þ])")


def _lang_of(text: str) -> str:
    """The language of a text, as far as the rules need it (to read its dates)."""
    low = f" {text.lower()} "
    marks = {
        "de": (" ich ", " sie ", " und ", " bin ", " nicht ", " wieder ", " im ", " der ",
               " die ", " das ", " ab dem ", " zurück"),
        "fr": (" je ", " suis ", " le ", " les ", " et ", " vous ", " de retour", " mon ",
               " à ", " jusqu"),
        "es": (" estoy ", " el ", " los ", " y ", " usted", " estaré", " hasta ", " mi ",
               " con ", " que "),
        "pt": (" estou ", " estarei", " o ", " os ", " e ", " você", " até ", " meu ", " com ",
               " não "),
        "nl": (" ik ", " ben ", " het ", " en ", " niet ", " weer ", " tot ", " met ", " van ",
               " een "),
        "it": (" sono ", " il ", " gli ", " e ", " non ", " fino ", " sarò ", " di ", " con ",
               " ufficio"),
        "en": (" i ", " am ", " the ", " and ", " will ", " be ", " until ", " my ", " with ",
               " you "),
    }
    scores = {lang: sum(low.count(w) for w in words) for lang, words in marks.items()}
    return max(scores, key=lambda k: scores[k])


def _numeric(text: str, lang: str) -> tuple[int, int, int | None] | None:
    parts = [p for p in re.split(r"[./-]", text.strip(". ")) if p]
    if len(parts) == 3 and len(parts[0]) == 4:  # ISO
        return int(parts[2]), int(parts[1]), int(parts[0])
    a, b = int(parts[0]), int(parts[1])
    year = None
    if len(parts) > 2:
        year = int(parts[2]) + (2000 if len(parts[2]) == 2 else 0)
    day, month = a, b
    if lang == "en" and b > 12 >= a:  # 1/13: month first
        day, month = b, a
    return (day, month, year) if 1 <= month <= 12 else None


def _in_context(day: int, month: int, sent: date) -> date | None:
    """A day and month without a year, in the year that makes sense next to `sent`: up
    to two months back (a notice left on after its return), else ahead."""
    for year in (sent.year - 1, sent.year, sent.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate >= sent - timedelta(days=60):
            return candidate
    return None


def read_date(phrase: str, lang: str, sent_at: datetime | None) -> date | None:
    """The day `phrase` (one `_DATE` match) names, read relative to `sent_at`."""
    base = (sent_at or datetime.now()).replace(tzinfo=None)
    core = re.sub(rf"^{_WEEKDAY},?\s+(?:(?:the|den|le|el|o|il|dia)\s+)?", "", phrase,
                  flags=re.IGNORECASE).strip()
    has_date = core != phrase.strip() or not re.fullmatch(_WEEKDAY, phrase.strip(), re.I)
    if has_date and re.fullmatch(rf"{_NUMERIC}|{_ISO}", core):
        parsed = _numeric(core, lang)
        if parsed is None:
            return None
        day, month, year = parsed
        if year is not None:
            try:
                return date(year, month, day)
            except ValueError:
                return None
        return _in_context(day, month, base.date())
    import dateparser  # here: a CLI that classifies nothing does not load it

    languages = [lang, *[x for x in LANGS if x != lang]]
    settings = {"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future",
                "RETURN_AS_TIMEZONE_AWARE": False}
    text = core if has_date and core else phrase
    found = dateparser.parse(text, languages=languages, settings=settings)
    if found is None:
        return None
    if has_date and not re.search(r"\d{4}", text) and not re.fullmatch(
            rf"{_WEEKDAY}|{_RELATIVE_DAYS}", text.strip(), re.IGNORECASE):
        return _in_context(found.day, found.month, base.date())
    return found.date()


def return_date(words: str, sent_at: datetime | None, lang: str) -> date | None:
    """The day an out-of-office notice says its sender is back: the latest date in a
    sentence that speaks of a return; a date that ends the absence ("until the 11th")
    gives the day after; one that starts it ("from the 20th to...") is passed over."""
    best: date | None = None
    for sentence in _SENTENCE.split(words):
        if not _RETURN.search(sentence):
            continue
        matches = list(_DATE.finditer(sentence))
        ends = [m for m in matches if _UNTIL.search(sentence[max(0, m.start() - 40):m.start()])]
        for m in matches:
            if m not in ends and ends and _FROM.search(sentence[max(0, m.start() - 30):m.start()]):
                continue  # the first day of the absence
            day = read_date(m.group(0), lang, sent_at)
            if day is None:
                continue
            if m in ends:
                day += timedelta(days=1)
            best = day if best is None or day > best else best
    return best


_NEXT_YEAR = _rx(r"\bnext year\b", r"\bn[äa]chstes jahr\b|\bim n[äa]chsten jahr\b",
                 r"\bl'ann[ée]e prochaine\b", r"\bel (?:a[ñn]o que viene|pr[óo]ximo a[ñn]o)\b",
                 r"\bpr[óo]ximo ano\b", r"\bvolgend jaar\b", r"\bl'anno prossimo\b")


def later_date(words: str, sent_at: datetime | None, lang: str) -> date | None:
    """The day a `not now` points at: a date, a month ("in March": its first day), or a
    quarter ("Q3": its first day), the next one after `sent_at`."""
    base = (sent_at or datetime.now()).date()
    m = _DATE.search(words)
    if m and not re.fullmatch(rf"{_WEEKDAY}", m.group(0), re.IGNORECASE):
        return read_date(m.group(0), lang, sent_at)
    q = re.search(r"\bq([1-4])\b", words, re.IGNORECASE)
    month = None
    if _NEXT_YEAR.search(words):
        return date(base.year + 1, 1, 1)
    if q:
        month = 3 * int(q.group(1)) - 2
    else:
        for name, number in _MONTH_NUMBER.items():
            if re.search(rf"\b{re.escape(name)}\b", words, re.IGNORECASE):
                month = number
                break
    if month is None:
        return None
    year = base.year if month > base.month else base.year + 1
    return date(year, month, 1)


def _canonical(names: str) -> dict[str, int]:
    """Month name -> number for one language's list (spelling variants share a number)."""
    variants = {"jänner": "januar", "fevrier": "février", "aout": "août",
                "decembre": "décembre", "setiembre": "septiembre", "marco": "março"}
    months: dict[str, int] = {}
    for name in names.split():
        months[name] = months[variants[name]] if name in variants else len(
            set(months.values())) + 1
    return months


#: Every month name of the seven languages -> its number.
_MONTH_NUMBER = {name: n for names in _MONTHS.values() for name, n in _canonical(names).items()}


# -- the classifier ------------------------------------------------------------------------------


def _referral(words: str, sender: str) -> Referral | None:
    """The contact a reply names, when it names one with an address and a cue."""
    if not _REFERRAL_CUE.search(words):
        return None
    own_domain = sender.rpartition("@")[2].lower()
    for m in _EMAIL.finditer(words):
        address = m.group(1).rstrip(".").lower()
        if address == sender.lower() or address.split("@")[0] in (
                "noreply", "no-reply", "donotreply", "mailer-daemon", "postmaster"):
            continue
        line_start = words.rfind("\n", 0, m.start()) + 1
        before = words[max(line_start, m.start() - 80):m.start()]
        name = None
        found = _NAME_BEFORE.search(before)
        if found:
            tokens = [t for t in found.group(1).split() if not _NOT_A_NAME.match(t)]
            while tokens and tokens[0][:1].islower():
                tokens.pop(0)
            name = " ".join(tokens) or None
        del own_domain  # same-domain colleagues are the usual referral: no domain rule
        return Referral(name=name, email=address)
    return None


def classify_reply_text(reply: ReplyText) -> ReplyClassification:
    """The rules' reading of one reply (see the module's docstring)."""
    subject = _subject_core(reply.subject)
    words = own_words(reply.text)
    header_why, header_certain = header_auto(reply.headers)
    auto_subject = bool(_AUTO_SUBJECT.search(subject))
    machine_kind = reply.kind in ("auto_reply", "bounce")

    def result(intent: ReplyIntent, confidence: float, why: str, **extra: object
               ) -> ReplyClassification:
        return ReplyClassification.model_validate(
            {"intent": intent, "confidence": confidence, "why": why, "classifier": "rules",
             **extra})

    # 1. Mail systems returning our message.
    if reply.kind == "bounce":
        return result(ReplyIntent.BOUNCE, 1.0, "a delivery status notification (DSN)")
    if _MAIL_SYSTEM.match(reply.sender) and (_BOUNCE_TEXT.search(subject)
                                             or _BOUNCE_TEXT.search(words[:2000])):
        return result(ReplyIntent.BOUNCE, 0.95, "a mail system's non-delivery notice")

    absent = _ABSENT.search(words) or _ABSENT.search(subject)
    auto_text = _AUTO_TEXT.search(words)
    machine = (header_why is not None and (header_certain or auto_subject or bool(absent)
                                           or bool(auto_text))) or machine_kind
    lang = _lang_of(words or subject)

    # 2. A person asking to be taken off (never read into a machine's text).
    if not machine:
        asked = unsubscribe_request(words, reply.subject)
        if asked:
            return result(ReplyIntent.UNSUBSCRIBE, 0.95,
                          f"asks to be unsubscribed ({lang}: {asked[:60]!r})")

    # 3. Out of office: by headers or subject with an absence, or an unmistakable notice.
    left = _LEFT.search(words)
    if absent and not left:
        ooo_why = None
        if machine or auto_subject:
            ooo_why, confidence = (header_why or ("inbound kind " + str(reply.kind) if
                                   machine_kind else "an automatic subject")), 0.97
        elif "?" not in words and (_RETURN.search(words) or auto_text):
            ooo_why, confidence = "an absence notice in the text", 0.9
        if ooo_why is not None:
            back = return_date(words, reply.sent_at, lang)
            return result(ReplyIntent.OUT_OF_OFFICE, confidence,
                          f"out of office ({lang}; {ooo_why})"
                          + (f"; back {back.isoformat()}" if back else "; no return date"),
                          date=back)

    # 4. Someone else to write to (a person's answer, or a "has left" notice).
    referral = _referral(words, reply.sender)
    if referral is not None and (not machine or left):
        return result(ReplyIntent.REFERRAL, 0.85, f"names another contact ({lang})",
                      referral=referral)

    # 5. Other machine replies.
    if machine or (auto_subject and auto_text) or (auto_text and "?" not in words):
        why = header_why or ("inbound kind auto_reply" if machine_kind else
                             "an automatic subject and text" if auto_subject else
                             "an automatic text")
        return result(ReplyIntent.AUTO_REPLY, 0.97 if machine else 0.9,
                      f"automatic reply ({why})")

    # 6. Clear refusals and deferrals.
    if _NOT_INTERESTED.search(words) and "?" not in words:
        if _LATER.search(words):
            when = later_date(words, reply.sent_at, lang)
            return result(ReplyIntent.NOT_NOW, 0.75, f"not now ({lang})", date=when)
        return result(ReplyIntent.NOT_INTERESTED, 0.8, f"declines ({lang})")
    if _LATER.search(words) and "?" not in words:
        when = later_date(words, reply.sent_at, lang)
        return result(ReplyIntent.NOT_NOW, 0.75, f"asks to be contacted later ({lang})"
                      + (f", from {when.isoformat()}" if when else ""), date=when)

    return result(ReplyIntent.UNCLEAR, 0.5, "a person's reply the rules do not read")
