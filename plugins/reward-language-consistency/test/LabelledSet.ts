/**
 * A small labelled set of chains of thought, written by hand for the language-consistency reward:
 * `consistent` when the whole chain is English (maths-heavy chains included), else mixed English and
 * French, or another language throughout. Sentences are short, as a model's reasoning steps are.
 * `test/trigram.test.ts` measures both modes on it; the README quotes the figures.
 */

/** One labelled chain: its language (`en+fr` for a mixed chain) and whether it is consistent English. */
export interface Chain {
  readonly language: "en" | "en-maths" | "en+fr" | "fr" | "de" | "es" | "it" | "pt" | "nl" | "zh" | "ja" | "ru"
  readonly consistent: boolean
  readonly text: string
}

const chains = (language: Chain["language"], consistent: boolean, texts: ReadonlyArray<string>): Array<Chain> => texts.map((text) => ({ language, consistent, text }))

/** English reasoning in plain words. */
export const english = chains("en", true, [
  "First I need to find how many apples are left. She had twelve apples and gave away five of them. So the number left is seven.",
  "The train leaves at noon and travels for three hours. It arrives in the afternoon. I should check whether the question asks for the arrival time.\nYes, it does.",
  "Let me think about the shape of the garden. The length is twice the width. If the width is four metres, the length must be eight metres.",
  "We want the total cost of the tickets. Each ticket costs the same amount. Multiply the price by the number of people who are going.",
  "Hmm, that does not look right. Let me go back and read the problem again. The bakery sold more bread on Monday than on Tuesday.",
  "The answer should be a whole number of boxes. Any remainder means one more box is needed. So we round up to the next box.",
  "I will check the result by working backwards. Starting from the final amount, subtract what was added each week. That gives the starting amount again.",
  "Wait, the question asks for the difference, not the sum. I computed the wrong thing at first. The difference between the two groups is what matters here."
])

/** English reasoning that is mostly arithmetic: the numbers and symbols are not words of any language. */
export const englishMaths = chains("en-maths", true, [
  "3 + 4 = 7, carry the 1. Then 2 + 5 + 1 = 8. So the sum is 87.",
  "Let x be the number of pens. Then 3x + 5 = 20, so 3x = 15 and x = 5.",
  "12 * 4 = 48. 48 - 6 = 42. 42 / 7 = 6. The answer is 6.",
  "Area = 5 * 8 = 40. Perimeter = 2 * (5 + 8) = 26.\nSo area 40, perimeter 26.",
  "We have 1/2 + 1/3 = 3/6 + 2/6 = 5/6. Then 5/6 of 36 is 30.",
  "First, 15% of 200 is 0.15 * 200 = 30. Then 200 - 30 = 170 dollars remain.",
  "Check: 7 * 8 = 56, and 56 + 4 = 60. Good, that matches.",
  "If a = 6 and b = 9, then a + b = 15 and a * b = 54. The ratio b / a = 1.5."
])

/** Chains that switch between English and French (about half of the words French). */
export const mixed = chains("en+fr", false, [
  "First I need to find how many apples are left. Elle avait douze pommes et en a donné cinq. Donc il en reste sept.",
  "Let me read the problem again. Le train part à midi et roule pendant trois heures. So it arrives at three in the afternoon.",
  "Nous cherchons le prix total des billets. Each ticket costs the same amount. Il faut multiplier le prix par le nombre de personnes.",
  "The length is twice the width. Si la largeur est de quatre mètres, la longueur est de huit mètres. That gives an area of thirty two.",
  "Attendez, la question demande la différence et pas la somme. I computed the wrong thing at first.",
  "We round up to the next box. Le reste signifie qu'il faut une boîte de plus. Donc la réponse est six boîtes."
])

/** French reasoning (Latin script: the script proxy calls it English). */
export const french = chains("fr", false, [
  "D'abord je dois trouver combien de pommes il reste. Elle avait douze pommes et en a donné cinq. Il en reste donc sept.",
  "Le train part à midi et roule pendant trois heures. Il arrive dans l'après-midi. Je dois vérifier ce que la question demande.",
  "La longueur du jardin est le double de sa largeur. Si la largeur est de quatre mètres, la longueur est de huit mètres.",
  "Attendez, ce n'est pas correct. Je relis l'énoncé du problème. La boulangerie a vendu plus de pain lundi que mardi."
])

/** German reasoning. */
export const german = chains("de", false, [
  "Zuerst muss ich herausfinden, wie viele Äpfel übrig sind. Sie hatte zwölf Äpfel und hat fünf verschenkt. Also bleiben sieben übrig.",
  "Der Zug fährt um zwölf Uhr ab und ist drei Stunden unterwegs. Er kommt am Nachmittag an. Ich prüfe, wonach die Frage fragt.",
  "Die Länge des Gartens ist doppelt so groß wie die Breite. Wenn die Breite vier Meter beträgt, ist die Länge acht Meter.",
  "Moment, das stimmt nicht. Ich lese die Aufgabe noch einmal. Die Bäckerei hat am Montag mehr Brot verkauft als am Dienstag."
])

/** Spanish reasoning. */
export const spanish = chains("es", false, [
  "Primero tengo que saber cuántas manzanas quedan. Ella tenía doce manzanas y regaló cinco. Entonces quedan siete.",
  "El tren sale a mediodía y viaja durante tres horas. Llega por la tarde. Debo comprobar qué pregunta el problema.",
  "La longitud del jardín es el doble de su anchura. Si la anchura es de cuatro metros, la longitud es de ocho metros.",
  "Espera, eso no parece correcto. Voy a leer el problema otra vez. La panadería vendió más pan el lunes que el martes."
])

/** Italian reasoning. */
export const italian = chains("it", false, [
  "Prima devo capire quante mele sono rimaste. Aveva dodici mele e ne ha regalate cinque. Quindi ne restano sette.",
  "Il treno parte a mezzogiorno e viaggia per tre ore. Arriva nel pomeriggio. Devo controllare cosa chiede la domanda.",
  "La lunghezza del giardino è il doppio della larghezza. Se la larghezza è di quattro metri, la lunghezza è di otto metri.",
  "Aspetta, non sembra giusto. Rileggo il problema dall'inizio. Il panificio ha venduto più pane lunedì che martedì."
])

/** Portuguese reasoning. */
export const portuguese = chains("pt", false, [
  "Primeiro preciso descobrir quantas maçãs sobraram. Ela tinha doze maçãs e deu cinco. Então sobram sete.",
  "O trem sai ao meio-dia e viaja durante três horas. Ele chega à tarde. Preciso verificar o que a pergunta quer saber.",
  "O comprimento do jardim é o dobro da largura. Se a largura é de quatro metros, o comprimento é de oito metros.",
  "Espere, isso não parece certo. Vou ler o problema de novo. A padaria vendeu mais pão na segunda do que na terça."
])

/** Dutch reasoning. */
export const dutch = chains("nl", false, [
  "Eerst moet ik uitzoeken hoeveel appels er over zijn. Ze had twaalf appels en gaf er vijf weg. Dus er blijven er zeven over.",
  "De trein vertrekt om twaalf uur en rijdt drie uur lang. Hij komt in de middag aan. Ik moet nagaan wat de vraag precies wil weten.",
  "De lengte van de tuin is twee keer de breedte. Als de breedte vier meter is, dan is de lengte acht meter.",
  "Wacht, dat klopt niet. Ik lees de opgave nog een keer. De bakkerij verkocht op maandag meer brood dan op dinsdag."
])

/** Chinese reasoning. */
export const chinese = chains("zh", false, [
  "首先我需要算出还剩多少个苹果。她有十二个苹果，送出去五个。所以还剩七个。",
  "火车中午出发，行驶三个小时。它下午到达。我要确认题目问的是什么。",
  "花园的长度是宽度的两倍。如果宽度是四米，那么长度就是八米。"
])

/** Japanese reasoning. */
export const japanese = chains("ja", false, [
  "まず、りんごがいくつ残っているかを考えます。彼女は十二個持っていて、五個あげました。だから七個残ります。",
  "電車は正午に出発して、三時間走ります。午後に着きます。質問が何を聞いているか確かめます。",
  "庭の長さは幅の二倍です。幅が四メートルなら、長さは八メートルです。"
])

/** Russian reasoning. */
export const russian = chains("ru", false, [
  "Сначала нужно понять, сколько яблок осталось. У неё было двенадцать яблок, и она отдала пять. Значит, осталось семь.",
  "Поезд отправляется в полдень и едет три часа. Он прибывает днём. Нужно проверить, о чём спрашивает задача.",
  "Длина сада в два раза больше ширины. Если ширина четыре метра, то длина восемь метров."
])

/** Every chain of the set. */
export const all: ReadonlyArray<Chain> = [...english, ...englishMaths, ...mixed, ...french, ...german, ...spanish, ...italian, ...portuguese, ...dutch, ...chinese, ...japanese, ...russian]
